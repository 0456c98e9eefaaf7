//! Receive path throughput: decode a chunk message, check its CRC, feed SHA-256 — what a device
//! does per chunk — next to SHA-256 alone on the same bytes.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ota_core::wire::{decode, encode_vec, Chunk, ImageId, Message};
use sha2::{Digest as _, Sha256};

const IMAGE: usize = 256 * 1024;

fn chunks(size: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let image: Vec<u8> = (0..IMAGE).map(|i| (i * 31 + i / 7) as u8).collect();
    let msgs = image
        .chunks(size)
        .enumerate()
        .map(|(i, p)| {
            encode_vec(&Message::Chunk(Chunk::new(
                ImageId(3),
                (i * size) as u32,
                p,
            )))
        })
        .collect();
    (image, msgs)
}

fn receive(c: &mut Criterion) {
    let mut g = c.benchmark_group("receive_256KiB");
    g.throughput(Throughput::Bytes(IMAGE as u64));
    for size in [256usize, 1024] {
        let (image, msgs) = chunks(size);
        g.bench_function(format!("decode+crc+sha256/{size}B"), |b| {
            b.iter(|| {
                let mut h = Sha256::new();
                for m in &msgs {
                    let Ok(Message::Chunk(c)) = decode(black_box(m)) else {
                        panic!()
                    };
                    assert!(c.crc_ok());
                    h.update(c.payload);
                }
                h.finalize()
            })
        });
        if size == 1024 {
            g.bench_function("sha256_only", |b| {
                b.iter(|| Sha256::digest(black_box(&image)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, receive);
criterion_main!(benches);
