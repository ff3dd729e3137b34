//! Generates the Rust code of `vigil/v1/*.proto` with a pure-Rust protobuf compiler
//! (protox), so building Vigil needs no system `protoc`.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["vigil/v1/collector.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Served by the detector's gRPC reflection service.
    std::fs::write(
        out_dir.join("vigil_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `connect()` helper: it would need tonic's transport in every user of this crate.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
