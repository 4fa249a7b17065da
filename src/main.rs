//! The `banhammer` command line.

use anyhow::Context;
use banhammer::cmd;
use banhammer::control::Request;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

// the daemon allocates on one thread (a source matching lines) and frees
// on another (the jail counting them); glibc's allocator handles that
// pattern badly (a third of the matching time went to it)
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "banhammer",
    version,
    about = "Intrusion prevention with Fail2Ban-compatible filters"
)]
struct Cli {
    /// Configuration directory (banhammer.conf, jail.conf, filter.d/, ...).
    #[arg(long, global = true, default_value = "/etc/banhammer")]
    config_dir: PathBuf,
    /// Control socket (default: `socket =` in banhammer.conf).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print the daemon's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum OutboxCmd {
    /// Messages, newest due first (pending, delivered, failed, cancelled).
    List {
        #[arg(long)]
        state: Option<String>,
    },
    /// Cancel a pending (or scheduled) message.
    Cancel { id: String },
    /// Send a failed message again now.
    Retry { id: String },
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Stay in the foreground (for systemd and terminals).
        #[arg(long, short = 'f')]
        foreground: bool,
    },
    /// Jails and their counts, or one jail in detail.
    Status { jail: Option<String> },
    /// Active bans (optionally only of these addresses).
    Banned { ips: Vec<String> },
    /// Ban addresses in a jail.
    Ban { jail: String, ips: Vec<String> },
    /// Lift bans of addresses in every jail (or all bans with --all).
    Unban {
        ips: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Re-read the configuration (all jails, or one).
    Reload { jail: Option<String> },
    /// Check that the daemon answers.
    Ping,
    /// The webhook outbox: list messages, cancel or retry one.
    Outbox {
        #[command(subcommand)]
        what: OutboxCmd,
    },
    /// Print an argon2 hash of a password for `[web] admin_password_hash`
    /// (the password is read from the terminal without echo, or from
    /// standard input).
    HashPassword,
    /// Stop the daemon (bans stay in the firewall and expire on time).
    Stop {
        /// Also remove banhammer's firewall table: every ban stops working.
        #[arg(long)]
        flush: bool,
    },
    /// Run one filter over a log file and print one JSON object per line
    /// (the conformance interface, see CONTRACT.md).
    TestFilter {
        /// Directory holding the filter files (a filter.d directory).
        #[arg(long)]
        filter_dir: PathBuf,
        /// Print JSON lines (the only format).
        #[arg(long)]
        json: bool,
        /// The clock, in epoch seconds (default: now).
        #[arg(long)]
        now: Option<f64>,
        /// Lines carry no timestamp (journal): the time of every line is --now.
        #[arg(long)]
        no_date: bool,
        /// Try every failregex (Fail2Ban's sample-test mode) instead of the first match.
        #[arg(long)]
        check_all: bool,
        /// Filter name with options, as a jail's `filter =` line: NAME[key=value, ...].
        spec: String,
        /// The log file.
        logfile: String,
    },
    /// Test a filter or a regex against a log, like fail2ban-regex.
    Regex {
        /// Directory for filter names (default: /etc/banhammer/filter.d, else ./filters).
        #[arg(long)]
        filter_dir: Option<PathBuf>,
        /// Stop at the first matching failregex per line (default: try all, as fail2ban-regex).
        #[arg(long)]
        no_check_all: bool,
        #[arg(long)]
        print_all_matched: bool,
        #[arg(long)]
        print_all_missed: bool,
        #[arg(long)]
        print_all_ignored: bool,
        /// Override the filter's datepattern.
        #[arg(short = 'd', long)]
        datepattern: Option<String>,
        /// Override the filter's maxlines.
        #[arg(short = 'l', long)]
        maxlines: Option<usize>,
        /// The clock, in epoch seconds (default: now).
        #[arg(long)]
        now: Option<f64>,
        /// Accepted for fail2ban-regex compatibility: host names are never resolved.
        #[arg(long)]
        raw: bool,
        /// 1: read and match on one thread; 2: read and date the lines on
        /// one thread, match them on another (default: 2 where the process
        /// may run on two CPUs or more).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
        threads: Option<u8>,
        /// A log file, `-` for standard input, or a log line.
        log: String,
        /// A filter name (with [options]), a filter file, or a regex with <HOST>.
        filter: String,
        /// An ignoreregex, or a filter file whose ignoreregex to use.
        ignoreregex: Option<String>,
    },
}

fn default_filter_dir() -> PathBuf {
    let installed = PathBuf::from("/etc/banhammer/filter.d");
    if installed.is_dir() {
        return installed;
    }
    let exe_repo = std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(|r| r.join("filters")))
        .filter(|p| p.is_dir());
    exe_repo.unwrap_or_else(|| PathBuf::from("filters"))
}

/// Sends one request to the daemon and prints its answer.
fn client(cli: &Cli, req: Request) -> anyhow::Result<()> {
    let socket = match &cli.socket {
        Some(s) => s.clone(),
        None => banhammer::config::daemon::DaemonConfig::read(&cli.config_dir)
            .map(|c| c.socket)
            .unwrap_or_else(|_| PathBuf::from(banhammer::config::daemon::DEFAULT_SOCKET)),
    };
    let v = banhammer::control::client::call(&socket, &req)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", banhammer::control::client::render(&req, &v));
    }
    Ok(())
}

/// One line from standard input; from a terminal, asked for without echo.
fn read_password() -> std::io::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    // SAFETY: termios calls on fd 0 with a zero-initialised struct that
    // tcgetattr fills in; the old settings are put back before returning.
    let old = if tty {
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) == 0 {
                let old = t;
                t.c_lflag &= !libc::ECHO;
                libc::tcsetattr(0, libc::TCSANOW, &t);
                Some(old)
            } else {
                None
            }
        }
    } else {
        None
    };
    if tty {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(old) = old {
        // SAFETY: restores the settings read above.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &old);
        }
        eprintln!();
    }
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // one TLS crypto provider for every TLS user (listeners, webhooks)
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Run { foreground } => {
            banhammer::daemon::run(banhammer::daemon::RunOptions {
                config_dir: cli.config_dir.clone(),
                foreground,
            })?;
        }
        Command::Status { ref jail } => client(&cli, Request::Status { jail: jail.clone() })?,
        Command::Banned { ref ips } => client(&cli, Request::Banned { ips: ips.clone() })?,
        Command::Ban { ref jail, ref ips } => client(
            &cli,
            Request::Ban {
                jail: jail.clone(),
                ips: ips.clone(),
            },
        )?,
        Command::Unban { ref ips, all } => {
            if ips.is_empty() && !all {
                anyhow::bail!("give addresses to unban, or --all");
            }
            client(
                &cli,
                Request::Unban {
                    ips: ips.clone(),
                    all,
                },
            )?
        }
        Command::Reload { ref jail } => client(&cli, Request::Reload { jail: jail.clone() })?,
        Command::Ping => client(&cli, Request::Ping)?,
        Command::Outbox { ref what } => {
            let (action, id, state) = match what {
                OutboxCmd::List { state } => ("list", None, state.clone()),
                OutboxCmd::Cancel { id } => ("cancel", Some(id.clone()), None),
                OutboxCmd::Retry { id } => ("retry", Some(id.clone()), None),
            };
            client(
                &cli,
                Request::Outbox {
                    action: action.into(),
                    id,
                    state,
                },
            )?
        }
        Command::HashPassword => {
            let pw = read_password().context("reading the password")?;
            if pw.is_empty() {
                anyhow::bail!("the password is empty");
            }
            let hash = banhammer::web::session::hash_password(&pw).map_err(anyhow::Error::msg)?;
            println!("{hash}");
        }
        Command::Stop { flush } => client(&cli, Request::Stop { flush })?,
        Command::TestFilter {
            filter_dir,
            json,
            now,
            no_date,
            check_all,
            spec,
            logfile,
        } => {
            if !json {
                anyhow::bail!("test-filter needs --json (the only output format)");
            }
            warnings_to_stderr();
            cmd::test_filter::run(&cmd::test_filter::TestFilterArgs {
                filter_dir: &filter_dir,
                spec: &spec,
                log: &logfile,
                now: now.unwrap_or_else(cmd::now),
                no_date,
                check_all,
            })
            .context("test-filter")?;
        }
        Command::Regex {
            filter_dir,
            no_check_all,
            print_all_matched,
            print_all_missed,
            print_all_ignored,
            datepattern,
            maxlines,
            now,
            raw: _,
            threads,
            log,
            filter,
            ignoreregex,
        } => {
            warnings_to_stderr();
            cmd::regex::run(&cmd::regex::RegexArgs {
                log,
                filter,
                ignore: ignoreregex,
                filter_dir: filter_dir.unwrap_or_else(default_filter_dir),
                check_all: !no_check_all,
                print_all_matched,
                print_all_missed,
                print_all_ignored,
                datepattern,
                maxlines,
                now,
                threads,
            })
            .context("regex")?;
        }
    }
    Ok(())
}

/// The filter engine's warnings (a pattern that cannot run on some lines)
/// reach the terminal of the one-shot filter commands; the daemon logs
/// them through its own log instead.
fn warnings_to_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("banhammer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
