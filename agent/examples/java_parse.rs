//! Runs the `vigil-agent parse` library function before the command line is wired:
//! `cargo run -p vigil-agent --example java_parse -- [--json] [--app-packages P,..] FILE...`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut json = false;
    let mut app_packages = Vec::new();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--app-packages" => {
                let v = args.next().unwrap_or_default();
                app_packages.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
            }
            _ => files.push(PathBuf::from(a)),
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    vigil_agent::java::parse_files(&files, &app_packages, json, &mut out)?;
    Ok(())
}
