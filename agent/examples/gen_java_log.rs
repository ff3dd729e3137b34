//! Writes a generated Java service log: `cargo run -p vigil-agent --example gen_java_log --
//! FILE BYTES [SEED]`.

use std::io::BufWriter;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: gen_java_log FILE BYTES [SEED]"))?;
    let bytes: u64 = args.next().unwrap_or_else(|| "10000000".into()).parse()?;
    let seed: u64 = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let mut w = BufWriter::new(std::fs::File::create(&path)?);
    let st = vigil_agent::java::generate::write_log(&mut w, bytes, seed, 1_763_923_483)?;
    println!("{path}: {st:?}");
    Ok(())
}
