//! Diff an overlay upper directory into a layer tar file (as `docker commit` does), hashing it
//! on the way; prints the layer's digest. Used by bench/layer_diff.py.
use std::io::Write;
use std::path::Path;

use sha2::Digest as _;

struct HashingFile(std::io::BufWriter<std::fs::File>, sha2::Sha256);

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, upper, out] = &args[..] else {
        eprintln!("usage: diff_layer UPPER_DIR OUT_TAR");
        std::process::exit(2);
    };
    let file = std::fs::File::create(out).expect("create output");
    let sink = HashingFile(std::io::BufWriter::with_capacity(1 << 20, file), sha2::Sha256::new());
    let mut sink = berth_store::diff::diff(berth_store::diff::Source::Overlay(Path::new(upper)), sink).expect("diff");
    sink.flush().expect("flush");
    sink.0.get_ref().sync_all().expect("sync");
    println!("sha256:{}", hex::encode(sink.1.finalize()));
}
