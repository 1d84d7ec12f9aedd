//! Compiles `proto/shoal.proto` with protox (pure Rust, so no `protoc` is needed) and generates
//! the tonic clients and servers from the descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/shoal.proto");
    let fds = protox::compile(["shoal.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
