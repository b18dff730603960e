//! `loadtest`: runs a scenario against a Ringcast server and reports; exits 1 when a threshold
//! given on the command line is violated or a client failed to connect, 2 when the run could
//! not start.

use clap::Parser;
use ringcast_loadtest::run::{self, Options};
use ringcast_loadtest::scenario::{Args, Scenario};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let scenario = match Scenario::resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let options = Options {
        api_key: std::env::var("RINGCAST_API_KEY").unwrap_or_else(|_| "devkey".to_owned()),
        api_secret: std::env::var("RINGCAST_API_SECRET")
            .unwrap_or_else(|_| "devsecret-for-local-testing-only".to_owned()),
        quiet: args.quiet,
        pin_core: args.pin_core,
        server_pid: args.server_pid,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let report = match rt.block_on(run::run(&scenario, &options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => {
                if let Err(e) = std::fs::write(path, j + "\n") {
                    eprintln!("loadtest: cannot write {}: {e}", path.display());
                    return std::process::ExitCode::from(2);
                }
            }
            Err(e) => {
                eprintln!("loadtest: cannot encode the report: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    if report.ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}
