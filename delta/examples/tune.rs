//! Prints patch sizes for LZMA stream tunings on the corpus: `cargo run --release -p fota-delta
//! --example tune -- ../shared/corpus/firmware`.
use fota_delta::codec::{self, StreamTuning, TUNING};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/corpus/firmware".into());
    let pairs: Vec<_> = ["esp8266", "pybv11", "programmer"]
        .iter()
        .map(|p| {
            let read = |ext| std::fs::read(format!("{dir}/{p}.{ext}")).expect("corpus file");
            (p, read("old"), read("new"))
        })
        .collect();
    let mut candidates = vec![("default".to_string(), TUNING)];
    let grid = std::env::args().nth(2).as_deref() != Some("--default-only");
    for stream in (0..3).filter(|_| grid) {
        for (lc, lp, pb) in [
            (0, 0, 0),
            (1, 0, 0),
            (2, 0, 0),
            (3, 0, 0),
            (0, 2, 2),
            (3, 0, 2),
            (1, 1, 1),
            (4, 0, 0),
            (8, 0, 0),
        ] {
            let mut t = TUNING;
            t[stream] = StreamTuning {
                lc,
                lp,
                pb,
                ..t[stream]
            };
            candidates.push((format!("s{stream} lc{lc} lp{lp} pb{pb}"), t));
        }
        for dict in [1u32 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 22] {
            let mut t = TUNING;
            t[stream].max_dict = dict;
            candidates.push((format!("s{stream} dict {dict}"), t));
        }
    }
    for (name, tuning) in candidates {
        let sizes: Vec<String> = pairs
            .iter()
            .map(|(_, old, new)| {
                let mut out = Vec::new();
                codec::encode_tuned(old, new, &tuning, &mut out);
                let bytes = out.len() + fota_delta::ENVELOPE_LEN;
                let percent = 100.0 * bytes as f64 / new.len() as f64;
                if grid {
                    format!("{percent:.2}%")
                } else {
                    let ram = codec::decoder_ram(&out).unwrap();
                    format!("{percent:.2}% ({bytes} B, RAM {ram} B)")
                }
            })
            .collect();
        println!("{name:28} {}", sizes.join("  "));
    }
}
