//! `ota-delta diff OLD NEW PATCH` and `ota-delta apply OLD PATCH OUT`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use ota_delta::{apply_in_memory, diff, Header};

const USAGE: &str = "usage: ota-delta diff OLD NEW PATCH   (make a patch that turns OLD into NEW)
       ota-delta apply OLD PATCH OUT  (rebuild NEW from OLD and PATCH, and check it)";

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn write(path: &str, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("cannot write {path}: {e}"))
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn run(args: &[String]) -> Result<String, String> {
    match args {
        [cmd, old, new, patch] if cmd == "diff" => {
            let (old_bytes, new_bytes) = (read(old)?, read(new)?);
            let t = Instant::now();
            let p = diff(&old_bytes, &new_bytes).map_err(|e| e.to_string())?;
            let took = t.elapsed();
            write(patch, &p)?;
            Ok(format!(
                "{patch}: {} bytes, {:.2} % of NEW ({} bytes), made in {:.2?}",
                p.len(),
                share(p.len(), new_bytes.len()),
                new_bytes.len(),
                took
            ))
        }
        [cmd, old, patch, out] if cmd == "apply" => {
            let (old_bytes, p) = (read(old)?, read(patch)?);
            let header = Header::parse(&p).map_err(|e| format!("{patch}: {e}"))?;
            let t = Instant::now();
            let rebuilt = apply_in_memory(&old_bytes, &p).map_err(|e| format!("{patch}: {e}"))?;
            let took = t.elapsed();
            write(out, &rebuilt)?;
            Ok(format!(
                "{out}: {} bytes rebuilt and checked (CRC-32 {:08x}) in {:.2?} from {} patch bytes",
                rebuilt.len(),
                header.new_crc32,
                took,
                p.len()
            ))
        }
        _ => Err(USAGE.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = std::env::args()
        .next()
        .as_deref()
        .and_then(|a| {
            Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "ota-delta".into());
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(if args.is_empty() { 2 } else { 1 })
        }
    }
}
