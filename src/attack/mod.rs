//! `fota attack`: replays, against a running engine, what a stranger on the network can send
//! (issue 17's probe): a survey-starving Register flood, guessed registration locations, a
//! registration flood with huge lifetimes and object lists, amplification by package requests
//! and Registers, log injection in endpoint names, a duplicate-cache flood, and, when given the
//! HTTP address, unauthenticated bodies and slow connections, and when given the coaps address,
//! what a stranger without a key can send to DTLS (`dtls_attacks`). After each attack a probe
//! device registers from another address and the time until the engine surveyed it is
//! measured (on coaps: until a new handshake was served).
//! Prints a table (attack, sent, effect) and `attack.NAME.FIGURE = value` lines.
//!
//! Attacks come from 127.0.0.2 and up, the probe from 127.0.0.1: loopback, so run it on the
//! engine's machine (`--coap 127.0.0.1:5683`).

mod coap_attacks;
mod dtls_attacks;
mod http_attacks;
mod probe_device;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;
use coap_lite::{MessageClass, ResponseType};

use coap_attacks::{Attacker, get_non, register, registered_id, update};

/// `fota attack` arguments.
#[derive(Args)]
pub struct AttackArgs {
    /// The engine's CoAP address (on this machine).
    #[arg(long, default_value = "127.0.0.1:5683")]
    coap: SocketAddr,
    /// The engine's HTTP address (host:port); without it the HTTP attacks are left out.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// The engine's coaps address (on this machine); without it the DTLS attacks are left out.
    #[arg(long)]
    coaps: Option<SocketAddr>,
    /// The engine's process id, to measure its memory (VmRSS) around each attack.
    #[arg(long)]
    pid: Option<u32>,
    /// Fewer datagrams and shorter waits: seconds, for CI.
    #[arg(long)]
    quick: bool,
}

/// One attack's line of the table.
struct Row {
    attack: &'static str,
    sent: String,
    effect: String,
    /// Figures, as `attack.{attack}.{name} = value`.
    figures: Vec<(&'static str, f64)>,
}

/// How long a probe may take to be surveyed before the attack counts as having starved it.
const PROBE_BOUND: Duration = Duration::from_secs(60);

/// Runs every attack in turn and prints what it did.
pub async fn run(args: AttackArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let scale = if args.quick { 1 } else { 4 };
    rows.push(baseline(&args).await?);
    rows.push(starve(&args, 300 * scale).await?);
    rows.push(takeover(&args).await?);
    rows.push(flood(&args, 250 * scale).await?);
    rows.push(amplify(&args).await?);
    rows.push(inject(&args).await?);
    rows.push(dedup(&args, 5_000 * scale).await?);
    if let Some(http) = args.http {
        rows.push(http_attacks::unauthenticated_bodies(http, args.pid).await?);
        rows.push(http_attacks::slow_connections(http, if args.quick { 20 } else { 50 }).await?);
    }
    if let Some(coaps) = args.coaps {
        let pid = args.pid;
        let dtls = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Row>> {
            Ok(vec![
                dtls_attacks::hello_flood(coaps, 50 * scale, pid)?,
                dtls_attacks::half_open(coaps, 300 * scale, pid)?,
                dtls_attacks::garbage(coaps, 500 * scale, pid)?,
            ])
        });
        rows.extend(dtls.await??);
    }
    print(&rows);
    Ok(())
}

fn print(rows: &[Row]) {
    println!("{:<22} {:<34} effect", "attack", "sent");
    for row in rows {
        println!("{:<22} {:<34} {}", row.attack, row.sent, row.effect);
    }
    for row in rows {
        for (name, value) in &row.figures {
            println!("attack.{}.{name} = {value}", row.attack);
        }
    }
}

/// An attacker's socket on loopback address 127.0.0.`host`.
async fn attacker(args: &AttackArgs, host: u8) -> anyhow::Result<Attacker> {
    Attacker::bind(IpAddr::from([127, 0, 0, host]), args.coap).await
}

/// The time to survey a new device now, in milliseconds (`None`: not within the bound).
async fn probe(args: &AttackArgs, after: &str) -> anyhow::Result<Option<f64>> {
    let name = format!("probe-{after}-{}", rand::random::<u32>());
    let took = probe_device::time_to_survey(args.coap, &name, PROBE_BOUND).await?;
    Ok(took.map(|d| d.as_secs_f64() * 1000.0))
}

/// The probe's figure and a phrase for the table.
fn probed(ms: Option<f64>) -> (f64, String) {
    match ms {
        Some(ms) => (ms, format!("a new device surveyed in {:.0} ms", ms)),
        None => (
            f64::INFINITY,
            format!("a new device NOT surveyed within {PROBE_BOUND:?}"),
        ),
    }
}

async fn baseline(args: &AttackArgs) -> anyhow::Result<Row> {
    let (ms, said) = probed(probe(args, "baseline").await?);
    Ok(Row {
        attack: "baseline",
        sent: "nothing".into(),
        effect: said,
        figures: vec![("probe_survey_ms", ms)],
    })
}

/// Registers from one port that never answers the survey reads, then a new device elsewhere.
async fn starve(args: &AttackArgs, count: usize) -> anyhow::Result<Row> {
    let mut socket = attacker(args, 2).await?;
    let tag: u32 = rand::random();
    for i in 0..count {
        socket
            .send(&register(&format!("starve-{tag}-{i}"), 86_400, 3))
            .await?;
    }
    let answers = socket.listen_until_quiet(Duration::from_secs(2)).await;
    let (ms, said) = probed(probe(args, "starve").await?);
    let created = count_code(&answers, ResponseType::Created);
    let limited = count_code(&answers, ResponseType::ServiceUnavailable);
    Ok(Row {
        attack: "starve_surveys",
        sent: format!("{count} Registers, reads unanswered"),
        effect: format!("{created} created, {limited} answered 5.03; {said}"),
        figures: vec![("probe_survey_ms", ms), ("created", created as f64)],
    })
}

/// Updates and De-registers to locations next to the attacker's own, with a victim beside.
async fn takeover(args: &AttackArgs) -> anyhow::Result<Row> {
    let mut socket = attacker(args, 3).await?;
    let tag: u32 = rand::random();
    let mut ids = Vec::new();
    for i in 0..2 {
        if let Some(id) = registered_id(&mut socket, &format!("taker-{tag}-{i}")).await? {
            ids.push(id);
        }
    }
    let (ms, said) = probed(probe(args, "takeover").await?);
    let mut guessed = 0;
    let mut accepted = 0;
    for id in &ids {
        for guess in neighbours(id) {
            guessed += 1;
            let answer = socket.ask(&update(&guess), Duration::from_secs(5)).await?;
            if answer == Some(MessageClass::Response(ResponseType::Changed)) {
                accepted += 1;
            }
        }
    }
    Ok(Row {
        attack: "take_over",
        sent: format!("{guessed} Updates to guessed locations"),
        effect: format!(
            "{accepted} accepted (ids like {}); {said}",
            ids.first().map(String::as_str).unwrap_or("-")
        ),
        figures: vec![("accepted", accepted as f64), ("probe_survey_ms", ms)],
    })
}

/// Locations a step away from `id`, as a sequential id would be.
fn neighbours(id: &str) -> Vec<String> {
    let Ok(number) = u128::from_str_radix(id, 16) else {
        return Vec::new();
    };
    (1..=10u128)
        .flat_map(|d| [number.wrapping_add(d), number.wrapping_sub(d)])
        .map(|n| format!("{n:0width$x}", width = id.len()))
        .collect()
}

/// Registrations with unique names, the longest lifetime and a huge object list; then the same
/// with an object list within the limit.
async fn flood(args: &AttackArgs, count: usize) -> anyhow::Result<Row> {
    let before = resident(args.pid);
    let mut socket = attacker(args, 4).await?;
    let tag: u32 = rand::random();
    for i in 0..count {
        socket
            .send(&register(&format!("flood-{tag}-{i}"), u32::MAX.into(), 430))
            .await?;
        socket
            .send(&register(
                &format!("flood-small-{tag}-{i}"),
                u32::MAX.into(),
                100,
            ))
            .await?;
    }
    let answers = socket.listen_until_quiet(Duration::from_secs(3)).await;
    let after = resident(args.pid);
    let (ms, said) = probed(probe(args, "flood").await?);
    let created = count_code(&answers, ResponseType::Created);
    let refused = count_code(&answers, ResponseType::BadRequest);
    let limited = count_code(&answers, ResponseType::ServiceUnavailable);
    let sent = 2 * count;
    let per_registration = match (before, after) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64 / sent as f64,
        _ => f64::NAN,
    };
    Ok(Row {
        attack: "registration_flood",
        sent: format!("{sent} Registers, lt 2^32-1, 430/100 links"),
        effect: format!(
            "{created} created, {refused} 4.00, {limited} 5.03; +{per_registration:.0} B each; {said}"
        ),
        figures: vec![
            ("created", created as f64),
            ("bytes_per_registration", per_registration),
            ("probe_survey_ms", ms),
        ],
    })
}

/// Package requests and a Register from a source that will never read the answers: bytes out
/// per byte in.
async fn amplify(args: &AttackArgs) -> anyhow::Result<Row> {
    let mut packages = attacker(args, 5).await?;
    let token = format!("{:032x}", rand::random::<u128>());
    for path in [["fw", token.as_str()], ["fw", "0123456789abcdef"]] {
        packages.send(&get_non(&path)).await?;
    }
    packages.listen(Duration::from_secs(1)).await;
    let package_ratio = ratio(&packages);
    let mut registers = attacker(args, 6).await?;
    let mut minimal = register(&format!("amp-{}", rand::random::<u32>()), 60, 0);
    minimal.query.truncate(1);
    registers.send(&minimal).await?;
    let window = if args.quick { 8 } else { 30 };
    registers.listen(Duration::from_secs(window)).await;
    let register_ratio = ratio(&registers);
    let (ms, said) = probed(probe(args, "amplify").await?);
    Ok(Row {
        attack: "amplification",
        sent: "GET /fw/{guess} (NON); a 1-query Register".into(),
        effect: format!(
            "packages {package_ratio:.2}x, Register {register_ratio:.2}x ({} datagrams back); {said}",
            registers.received.datagrams
        ),
        figures: vec![
            ("package_ratio", package_ratio),
            ("register_ratio", register_ratio),
            ("probe_survey_ms", ms),
        ],
    })
}

fn ratio(attacker: &Attacker) -> f64 {
    attacker.received.bytes as f64 / attacker.sent.bytes.max(1) as f64
}

/// Endpoint names carrying a forged log line and terminal escapes.
async fn inject(args: &AttackArgs) -> anyhow::Result<Row> {
    let mut socket = attacker(args, 7).await?;
    let names = [
        "x\nERROR fota_engine: forged",
        "x\u{1b}[31mred",
        "two words",
    ];
    let mut refused = 0;
    for name in names {
        let answer = socket
            .ask(&register(name, 60, 1), Duration::from_secs(5))
            .await?;
        if answer == Some(MessageClass::Response(ResponseType::BadRequest)) {
            refused += 1;
        }
    }
    Ok(Row {
        attack: "log_injection",
        sent: format!("{} Registers with control characters", names.len()),
        effect: format!("{refused} refused with 4.00"),
        figures: vec![("refused", refused as f64), ("sent", names.len() as f64)],
    })
}

/// Confirmable requests with new message ids, each answered and remembered for duplicates.
async fn dedup(args: &AttackArgs, count: usize) -> anyhow::Result<Row> {
    let before = resident(args.pid);
    let mut socket = attacker(args, 8).await?;
    for _ in 0..count {
        socket
            .send(&update(&format!("{:032x}", rand::random::<u128>())))
            .await?;
    }
    socket.listen_until_quiet(Duration::from_secs(2)).await;
    let after = resident(args.pid);
    let grown = match (before, after) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64,
        _ => f64::NAN,
    };
    Ok(Row {
        attack: "dedup_flood",
        sent: format!("{count} CON POSTs, new message ids"),
        effect: format!(
            "{} answered; memory +{:.0} KiB",
            socket.received.datagrams,
            grown / 1024.0
        ),
        figures: vec![("memory_grown_bytes", grown)],
    })
}

fn count_code(
    answers: &std::collections::BTreeMap<u16, MessageClass>,
    code: ResponseType,
) -> usize {
    answers
        .values()
        .filter(|c| **c == MessageClass::Response(code))
        .count()
}

/// The resident memory of process `pid`, in bytes.
fn resident(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
