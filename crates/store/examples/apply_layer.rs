//! Apply one layer file (plain, gzip or zstd) to a new directory the way the store does for a
//! pull: hash the compressed stream, decompress and hash the uncompressed stream (the diffID) on
//! one thread while the other unpacks. Used by bench/layer_apply.py.
use std::io::Read;
use std::path::Path;

use berth_store::archive::{self, Pipeline, WhiteoutMode};
use sha2::Digest as _;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, layer, dest] = &args[..] else {
        eprintln!("usage: apply_layer LAYER DEST_DIR");
        std::process::exit(2);
    };
    let file = std::fs::File::open(layer).expect("open layer");
    let mut stream = Pipeline::start(move |w| {
        struct Hashing<R>(R, sha2::Sha256);
        impl<R: Read> Read for Hashing<R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(buf)?;
                self.1.update(&buf[..n]);
                Ok(n)
            }
        }
        let mut compressed = Hashing(std::io::BufReader::with_capacity(1 << 20, file), sha2::Sha256::new());
        let mut diff = sha2::Sha256::new();
        {
            let mut decompressed = archive::decompress(&mut compressed)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = decompressed.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                diff.update(&buf[..n]);
                w.write_all(&buf[..n])?;
            }
        }
        Ok((hex::encode(diff.finalize()), hex::encode(compressed.1.finalize())))
    });
    let applied = archive::apply(Path::new(dest), &mut stream, WhiteoutMode::Overlay).expect("apply");
    let (diff_id, blob) = stream.finish().expect("layer stream");
    println!("{} entries, {} bytes, diffID sha256:{diff_id}, blob sha256:{blob}", applied.entries, applied.bytes);
}
