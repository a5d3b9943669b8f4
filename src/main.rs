//! `lambda-at-home-server`: parses flags, starts the server, waits for SIGTERM/SIGINT.

use std::io::IsTerminal;

use clap::Parser;
use lambda_at_home::config::Config;
use lambda_at_home::console::Console;
use lambda_at_home::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let config = Config::parse();
    // Log lines (on stdout, tracing's default) are formatted where they happen and written by
    // the console thread: a data-plane core never makes a system call for them nor waits for
    // stdout (console.rs).
    let console = Console::start(Box::new(std::io::stdout())).unwrap_or_else(|e| {
        eprintln!("lambda-at-home-server: cannot start the console thread: {e}");
        std::process::exit(1);
    });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(console.writer())
        .init();
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            drop(console);
            eprintln!("lambda-at-home-server: {e}");
            std::process::exit(1);
        }
    };
    wait_for_signal();
    tracing::info!("signal received: stopping (in-flight invocations may finish)");
    server.shutdown();
    drop(console);
}

fn wait_for_signal() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a signal runtime");
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
}
