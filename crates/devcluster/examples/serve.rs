//! Runs the embedded API server until Ctrl-C: `cargo run -p jobtide-devcluster --example serve -- 127.0.0.1:6443`.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6443".into());
    let addr = addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("{addr}: {e}")))?;
    let cluster = jobtide_devcluster::DevCluster::start(addr, None).await?;
    println!("serving on {}", cluster.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
