//! Compiles `miniprogram/**/*.proto` with protox (no system protoc), generates tonic clients
//! and servers from the resulting descriptor set, and writes that set to OUT_DIR for server
//! reflection.

use std::path::{Path, PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "miniprogram/auth/v1/auth.proto",
    "miniprogram/userinfo/v1/userinfo.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only the contract's own files matter; listing them avoids rebuilding on unrelated edits.
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        Path::new(&out_dir).join("miniprogram_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
