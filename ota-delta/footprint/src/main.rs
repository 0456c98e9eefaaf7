//! A Cortex-M4 program that feeds patch chunks to the applier and persists its state after each,
//! as a device does; `footprint.sh` builds it with and without the applier and subtracts.
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Where the program's inputs come from: opaque to the optimiser.
static PATCH: [u8; 1024] = [0; 1024];
static OLD: [u8; 1024] = [0; 1024];

#[cfg(feature = "applier")]
fn work() -> u32 {
    use ota_delta::{Applier, Source, State, STATE_LEN};
    let source = Source {
        len: black_box(1024),
        sha256: black_box([0; 32]),
    };
    let mut new = [0u8; 1024];
    let mut saved: [u8; STATE_LEN] = black_box([0; STATE_LEN]);
    let mut applier = match State::from_bytes(&saved) {
        Ok(s) => match Applier::resume(s, source, 1024) {
            Ok(a) => a,
            Err(_) => return 1,
        },
        Err(_) => Applier::new(source, 1024),
    };
    let mut old: &[u8] = black_box(&OLD[..]);
    for chunk in black_box(&PATCH[..]).chunks(black_box(256)) {
        match applier.feed(chunk, &mut old, &mut new[..]) {
            Ok(p) => {
                saved = applier.state().to_bytes();
                black_box(&saved);
                if p.done {
                    return applier.finish::<ota_delta::OutOfBounds>().unwrap_or(0);
                }
            }
            Err(_) => return 2,
        }
    }
    black_box(&new);
    0
}

#[cfg(not(feature = "applier"))]
fn work() -> u32 {
    let mut new = [0u8; 1024];
    for (chunk, dst) in black_box(&PATCH[..]).chunks(256).zip(new.chunks_mut(256)) {
        dst.copy_from_slice(chunk);
    }
    black_box(&OLD);
    black_box(&new);
    0
}

#[entry]
fn main() -> ! {
    let r = work();
    black_box(r);
    loop {}
}
