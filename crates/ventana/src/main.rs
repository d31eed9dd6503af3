use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = ventana::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VENTANA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.default_log_level()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match ventana::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
