//! The `joinery` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use joinery_providers::{ConnectionSpec, factories, factory_for};
use joinery_server::config::{Config, parse_listen};
use joinery_server::server::{RunningServer, TextResult, build, run_local};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "joinery",
    version,
    about = "Joinery: every SaaS tool as SQL tables, served over the Postgres wire protocol"
)]
struct Cli {
    /// What to do; without one, Joinery serves the demo world on 127.0.0.1:5433.
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand)]
enum Commands {
    /// Serve the connections of a config file over the Postgres wire protocol.
    Serve {
        /// Path to joinery.toml.
        #[arg(short, long, env = "JOINERY_CONFIG")]
        config: PathBuf,
        /// Listen address (overrides [server] listen), e.g. 127.0.0.1:5433.
        #[arg(long)]
        listen: Option<String>,
        /// Address of /metrics and /healthz (overrides [server] metrics_listen), or "off".
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Serve the demo world (no configuration needed).
    Demo {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:5433")]
        listen: String,
        /// Multiply the demo data volumes.
        #[arg(long, default_value_t = 1)]
        scale: u64,
        /// Seed of the generated data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Latency each fake API call takes, in milliseconds (50 is realistic for benchmarks).
        #[arg(long, default_value_t = 0)]
        api_latency: u64,
        /// Address of /metrics and /healthz, or "off".
        #[arg(long, default_value = "127.0.0.1:9187")]
        metrics_listen: String,
    },
    /// Run one or more SQL statements and print the results.
    Query {
        /// Path to joinery.toml (the demo world when omitted).
        #[arg(short, long, env = "JOINERY_CONFIG")]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// The SQL to run.
        sql: String,
    },
    /// Validate a config file and check that each connection is reachable.
    Check {
        /// Path to joinery.toml.
        #[arg(short, long, env = "JOINERY_CONFIG")]
        config: PathBuf,
    },
    /// List the connector kinds this build knows.
    Kinds,
    /// Manage the encrypted secret store (`[secrets]` in the config; values are read from
    /// standard input and never printed).
    Secrets {
        /// Path to joinery.toml.
        #[arg(short, long, env = "JOINERY_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Read a password from standard input and print its SCRAM-SHA-256 verifier for a
    /// `[users.<name>] password = "..."` line (the password itself is never stored).
    Password,
}

#[derive(Subcommand)]
enum SecretAction {
    /// Write a new random AES-256 key to a file readable only by you (mode 0600).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Store a secret (the value is read from standard input).
    Set {
        name: String,
        /// Days after which `list` warns that the secret is due for rotation.
        #[arg(long)]
        rotation_days: Option<u32>,
    },
    /// Names, owners, ages and rotation warnings (never values).
    List,
    /// Replace a secret's value (read from standard input).
    Rotate { name: String },
    /// Remove a secret.
    Delete { name: String },
}

/// Who runs the CLI, for the store's `created_by`.
fn cli_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "cli".into())
}

/// A line from standard input, wiped from memory when dropped.
fn read_secret_value() -> Result<zeroize::Zeroizing<String>, String> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the value: {e}"))?;
    let len = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(len);
    if line.is_empty() {
        return Err("an empty value cannot be stored".into());
    }
    Ok(line)
}

fn secrets_command(config: Option<PathBuf>, action: SecretAction) -> Result<(), String> {
    if let SecretAction::Keygen { out } = &action {
        joinery_server::secrets::write_key_file(out)?;
        println!(
            "wrote a new key to {} (mode 0600); keep it apart from the store",
            out.display()
        );
        return Ok(());
    }
    let path = config.ok_or("--config (or JOINERY_CONFIG) is required")?;
    let sc = joinery_server::config::SecretsConfig::from_file(&path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} has no [secrets] section", path.display()))?;
    let mut store = sc.open().map_err(|e| e.to_string())?;
    match action {
        SecretAction::Keygen { .. } => Ok(()),
        SecretAction::Set {
            name,
            rotation_days,
        } => {
            let v = read_secret_value()?;
            store.set(&name, &v, &cli_user(), rotation_days)?;
            println!("stored secret '{name}'");
            Ok(())
        }
        SecretAction::Rotate { name } => {
            let v = read_secret_value()?;
            store.rotate(&name, &v, &cli_user())?;
            println!("rotated secret '{name}'");
            Ok(())
        }
        SecretAction::Delete { name } => {
            store.delete(&name)?;
            println!("deleted secret '{name}'");
            Ok(())
        }
        SecretAction::List => {
            let now = chrono::Utc::now();
            println!(
                "{:<24} {:<12} {:<20} {:<20} {:>8} {:<20} status",
                "name", "created_by", "created_at", "rotated_at", "age_days", "last_used_at"
            );
            for (name, e) in store.entries() {
                let fmt =
                    |t: &chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M").to_string();
                println!(
                    "{:<24} {:<12} {:<20} {:<20} {:>8} {:<20} {}",
                    name,
                    e.created_by,
                    fmt(&e.created_at),
                    fmt(&e.rotated_at),
                    e.age_days(now),
                    e.last_used_at
                        .as_ref()
                        .map(fmt)
                        .unwrap_or_else(|| "never".into()),
                    if e.overdue(now) {
                        format!(
                            "WARNING: older than its {}-day rotation period",
                            e.rotation_days
                        )
                    } else {
                        "ok".into()
                    }
                );
            }
            Ok(())
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// The demo world: the `demo` connection, the SaaS fakes on loopback, and the warehouse files.
async fn demo_config(
    scale: u64,
    seed: u64,
    api_latency_ms: u64,
) -> Result<(Config, joinery_providers::demo::world::DemoWorld), String> {
    let mut cfg = Config::default();
    cfg.connections.push(ConnectionSpec {
        name: "demo".into(),
        kind: "demo".into(),
        base_url: None,
        options: [
            ("scale".to_string(), serde_json::Value::from(scale)),
            ("seed".to_string(), serde_json::Value::from(seed)),
        ]
        .into_iter()
        .collect(),
        base_dir: None,
        secret_refs: Default::default(),
    });
    // The warehouse side of the demo world: files written fresh on every start.
    let dir = std::env::temp_dir().join(format!(
        "joinery-demo-{}-{seed}-{scale}",
        std::process::id()
    ));
    let world = joinery_providers::demo::world::start(
        seed,
        scale,
        joinery_providers::demo::world::default_as_of(),
        std::time::Duration::from_millis(api_latency_ms),
        &dir,
    )
    .await
    .map_err(|e| e.to_string())?;
    cfg.connections.extend(world.connections.iter().cloned());
    for (name, fake) in &world.fakes {
        info!("demo: fake {name} API at {}", fake.base_url());
    }
    Ok((cfg, world))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// On a terminal, a spinner with what the running statement fetched so far (pages, rows, the
/// tools asked); nothing when stderr is a pipe or a file.
fn progress_bar(
    shared: &std::sync::Arc<joinery_server::handler::Shared>,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
        bar.set_style(style);
    }
    let (b, s) = (bar.clone(), shared.clone());
    let task = tokio::spawn(async move {
        loop {
            let p = s.metrics().running_totals();
            let tools = p.connectors.iter().cloned().collect::<Vec<_>>().join(", ");
            b.set_message(format!(
                "{} page(s), {} row(s) fetched ({} from cache){}",
                p.pages,
                p.rows,
                p.cache_hits,
                if tools.is_empty() {
                    String::new()
                } else {
                    format!(" from {tools}")
                }
            ));
            b.tick();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    Some((bar, task))
}

fn metrics_addr(s: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if s == "off" {
        return Ok(None);
    }
    parse_listen(s).map(Some)
}

async fn serve(config: Config) -> Result<(), String> {
    let shared = build(&config).await.map_err(|e| e.to_string())?;
    let _observe = match config.server.metrics_listen {
        Some(addr) => {
            let o = joinery_server::observe::start(shared.clone(), addr)
                .await
                .map_err(|e| {
                    format!(
                        "cannot listen on {addr} for /metrics: {e} (use --metrics-listen or [server] metrics_listen = \"off\")"
                    )
                })?;
            info!("metrics at http://{}/metrics, health at /healthz", o.addr);
            Some(o)
        }
        None => None,
    };
    let server = RunningServer::start(shared, config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    info!(
        "connect with: psql -h {} -p {} -U <user>",
        server.addr.ip(),
        server.addr.port()
    );
    let token = server.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        token.cancel();
    });
    server.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_results(results: &[TextResult], format: OutputFormat) -> Result<(), String> {
    for r in results {
        match format {
            OutputFormat::Table => print!("{}", render_table(r)),
            OutputFormat::Csv => {
                let mut out = String::new();
                out.push_str(
                    &r.columns
                        .iter()
                        .map(|c| csv_field(c))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                out.push('\n');
                for row in &r.rows {
                    let line: Vec<String> = row
                        .iter()
                        .map(|v| v.as_deref().map(csv_field).unwrap_or_default())
                        .collect();
                    out.push_str(&line.join(","));
                    out.push('\n');
                }
                print!("{out}");
            }
            OutputFormat::Json => {
                let rows: Vec<serde_json::Value> = r
                    .rows
                    .iter()
                    .map(|row| {
                        serde_json::Value::Object(
                            r.columns
                                .iter()
                                .zip(row)
                                .map(|(c, v)| {
                                    (
                                        c.clone(),
                                        v.clone()
                                            .map(serde_json::Value::String)
                                            .unwrap_or(serde_json::Value::Null),
                                    )
                                })
                                .collect(),
                        )
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            }
        }
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// An aligned table in psql's style.
fn render_table(r: &TextResult) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = r.columns.iter().map(|c| width(c)).collect();
    for row in &r.rows {
        for (i, v) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(v.as_deref().map(width).unwrap_or(0));
            }
        }
    }
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(width(s))));
    let mut out = String::new();
    let header: Vec<String> = r
        .columns
        .iter()
        .zip(&widths)
        .map(|(c, w)| {
            let left = (w.saturating_sub(width(c))) / 2;
            pad(&format!("{}{c}", " ".repeat(left)), *w)
        })
        .collect();
    out.push_str(&format!(" {} \n", header.join(" | ")));
    out.push_str(&format!(
        "{}\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    ));
    for row in &r.rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(v, w)| pad(v.as_deref().unwrap_or(""), *w))
            .collect();
        out.push_str(&format!(" {} \n", cells.join(" | ")));
    }
    let n = r.rows.len();
    out.push_str(&format!("({n} row{})\n\n", if n == 1 { "" } else { "s" }));
    out
}

async fn run(cli: Cli) -> Result<(), String> {
    let command = cli.command.unwrap_or(Commands::Demo {
        listen: joinery_server::config::DEFAULT_LISTEN.to_string(),
        scale: 1,
        seed: 42,
        api_latency: 0,
        metrics_listen: format!("127.0.0.1:{}", joinery_server::config::DEFAULT_METRICS_PORT),
    });
    match command {
        Commands::Serve {
            config,
            listen,
            metrics_listen,
        } => {
            let mut cfg = Config::from_file(&config).map_err(|e| e.to_string())?;
            if let Some(l) = listen {
                cfg.server.listen = parse_listen(&l)?;
            }
            if let Some(m) = metrics_listen {
                cfg.server.metrics_listen = metrics_addr(&m)?;
            }
            serve(cfg).await
        }
        Commands::Demo {
            listen,
            scale,
            seed,
            api_latency,
            metrics_listen,
        } => {
            let (mut cfg, _world) = demo_config(scale, seed, api_latency).await?;
            cfg.server.listen = parse_listen(&listen)?;
            cfg.server.metrics_listen = metrics_addr(&metrics_listen)?;
            serve(cfg).await
        }
        Commands::Query {
            config,
            format,
            sql,
        } => {
            let (cfg, _world) = match config {
                Some(p) => (Config::from_file(&p).map_err(|e| e.to_string())?, None),
                None => {
                    let (c, w) = demo_config(1, 42, 0).await?;
                    (c, Some(w))
                }
            };
            let shared = build(&cfg).await.map_err(|e| e.to_string())?;
            let user = std::env::var("USER").unwrap_or_else(|_| "joinery".into());
            let progress = progress_bar(&shared);
            let results = run_local(&shared, &user, &sql).await;
            if let Some((bar, task)) = progress {
                task.abort();
                bar.finish_and_clear();
            }
            let results =
                results.map_err(|e| format!("ERROR: {} (SQLSTATE {})", e.message, e.state.0))?;
            print_results(&results, format)
        }
        Commands::Check { config } => {
            let cfg = Config::from_file(&config).map_err(|e| e.to_string())?;
            println!(
                "config {} is valid: {} connection(s)",
                config.display(),
                cfg.connections.len()
            );
            let mut failed = 0;
            for spec in &cfg.connections {
                let result = match factory_for(&spec.kind) {
                    None => Err(format!("unknown kind '{}'", spec.kind)),
                    Some(f) => match f.build(spec, &Default::default()) {
                        Err(e) => Err(e.to_string()),
                        Ok(c) => c.check().await.map_err(|e| e.to_string()),
                    },
                };
                match result {
                    Ok(status) => println!("  ok    {} ({}): {status}", spec.name, spec.kind),
                    Err(e) => {
                        failed += 1;
                        println!("  FAIL  {} ({}): {e}", spec.name, spec.kind);
                    }
                }
            }
            if failed > 0 {
                return Err(format!("{failed} connection(s) failed"));
            }
            Ok(())
        }
        Commands::Secrets { config, action } => secrets_command(config, action),
        Commands::Password => {
            let mut line = zeroize::Zeroizing::new(String::new());
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("password (echoed; or pipe it in): ");
            }
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password: {e}"))?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err("an empty password cannot be used".into());
            }
            println!("{}", joinery_server::auth::make_verifier(password));
            Ok(())
        }
        Commands::Kinds => {
            for f in factories() {
                println!("{:<12} {}", f.kind(), f.description());
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("joinery: {e}");
            ExitCode::FAILURE
        }
    }
}
