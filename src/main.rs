//! `directmail`: parse the configuration, start logging, run the portal or an admin
//! command. Everything else lives in the library.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use directmail::app::{self, Application};
use directmail::config::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return config_error(e),
    };
    // admin commands print their own results; only problems go to the log
    let quiet = matches!(cli.command, Some(Command::Admin(_))) && cli.config.log == "info";
    init_tracing(
        if quiet { "warn" } else { &cli.config.log },
        cli.config.log_format,
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("directmail: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None | Some(Command::Serve) => serve(cli.config).await,
            Some(Command::Admin(args)) => directmail::cli::run(&cli.config, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // one sentence (with its causes) saying what to fix
            eprintln!("directmail: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: directmail::config::Config) -> anyhow::Result<()> {
    let shutdown = app::shutdown_signal();
    let application = Application::build(config).await?;
    let addr = application.local_addr()?;
    if let Some(first) = &application.first_operator {
        // Straight to the terminal, never through the logger: shown once, never again.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "\n  First start: a HISP operator account was created.\n    e-mail:             {}\n    one-time password:  {}\n  Sign in at http://{addr}/login; you will be asked to choose a new password.\n  This password is not shown again.\n",
            first.email, first.one_time_password
        );
        let _ = out.flush();
    }
    let smtp = application.smtp_addr()?;
    tracing::info!(%addr, %smtp, "directmail is listening");
    application.run_until(shutdown).await
}

fn init_tracing(filter: &str, format: LogFormat) {
    // PostgreSQL's NOTICEs ("relation already exists, skipping") are not news
    let filter = if filter.contains("sqlx") {
        filter.to_owned()
    } else {
        format!("{filter},sqlx::postgres::notice=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// A bad flag or `DIRECTMAIL_*` value: one sentence naming both spellings.
fn config_error(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) && let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) {
        let flag = arg.split_whitespace().next().unwrap_or(arg);
        let var = format!(
            "DIRECTMAIL_{}",
            flag.trim_start_matches('-')
                .replace('-', "_")
                .to_uppercase()
        );
        let reason = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        eprintln!(
            "directmail: \u{201c}{value}\u{201d} is not a valid value for {flag} or {var}{reason}"
        );
        return ExitCode::from(2);
    }
    let _ = e.print();
    ExitCode::from(if e.use_stderr() { 2 } else { 0 })
}
