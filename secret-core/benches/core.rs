//! secret-core micro-benchmarks (plain `main`, no criterion).
//!
//! Every figure is the median of several repetitions and every section has a baseline measured
//! in the same run, so the ratios are comparable across machines even when absolute numbers are
//! not. Inputs are deterministic. Timings are printed, never asserted.
//!
//! `cargo bench -p secret-core` (full) or `BENCH_QUICK=1 cargo bench -p secret-core` (smoke run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use secret_core::crypto::{
    AuthKey, CryptoError, aes_ige_decrypt, aes_ige_encrypt, aes256_encrypt_block_calls,
    aes256_encrypt_blocks, aes256_encrypt_single_blocks, decrypt_message, encrypt_message, sha256,
};
use secret_core::dh::{
    DhConfig, DhSecret, TELEGRAM_DH_PRIME, bench_support, compute_shared_key, generate_key_pair,
    modpow_ct, modpow_num_bigint,
};
use secret_core::rand::{SecureRandom, SeededRandom, SystemRandom};

/// `aes_ige_encrypt` or `aes_ige_decrypt`.
type IgeFn = fn(&[u8; 32], &[u8; 32], &mut [u8]) -> Result<(), CryptoError>;

struct Settings {
    reps: usize,
    target: Duration,
}

fn settings() -> Settings {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if quick {
        Settings {
            reps: 3,
            target: Duration::from_millis(5),
        }
    } else {
        Settings {
            reps: 21,
            target: Duration::from_millis(30),
        }
    }
}

/// A named function to time.
struct Bench<'a> {
    name: String,
    f: Box<dyn FnMut() + 'a>,
}

fn bench<'a>(name: impl Into<String>, f: impl FnMut() + 'a) -> Bench<'a> {
    Bench {
        name: name.into(),
        f: Box::new(f),
    }
}

/// Calls per batch so that one batch of `f` takes about `target`.
fn calibrate(target: Duration, f: &mut dyn FnMut()) -> u64 {
    let mut iters: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let el = t.elapsed();
        if el >= target / 4 || iters >= 1 << 30 {
            let per = el.as_secs_f64() / iters as f64;
            return ((target.as_secs_f64() / per.max(1e-12)) as u64).max(1);
        }
        iters *= 4;
    }
}

/// Median nanoseconds per call of each benchmark of a group. The group's batches are
/// interleaved (round robin, `s.reps` rounds), so that load from other processes on a shared
/// machine hits the baseline and its contenders alike and the ratios stay meaningful.
fn measure_group(s: &Settings, group: &mut [Bench<'_>]) -> Vec<f64> {
    let iters: Vec<u64> = group
        .iter_mut()
        .map(|b| calibrate(s.target, &mut b.f))
        .collect();
    let mut samples = vec![Vec::with_capacity(s.reps); group.len()];
    for _ in 0..s.reps {
        for ((b, &n), out) in group.iter_mut().zip(&iters).zip(samples.iter_mut()) {
            let t = Instant::now();
            for _ in 0..n {
                (b.f)();
            }
            out.push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

/// Appends a group's results: the first benchmark is the baseline of the others.
/// `convert` turns ns/op into the displayed unit; `higher_is_better` flips the ratio so that it
/// always reads "contender / baseline" in the displayed unit.
fn push_group(
    rows: &mut Vec<Row>,
    section: &'static str,
    group: &[Bench<'_>],
    ns: &[f64],
    unit: &'static str,
    base_label: &'static str,
    convert: impl Fn(f64) -> f64,
) {
    let base = convert(ns[0]);
    for (i, (b, &t)) in group.iter().zip(ns).enumerate() {
        let value = convert(t);
        rows.push(Row {
            section,
            name: b.name.clone(),
            value,
            unit,
            ratio: (i > 0).then_some((value / base, base_label)),
        });
    }
}

struct Row {
    section: &'static str,
    name: String,
    value: f64,
    unit: &'static str,
    ratio: Option<(f64, &'static str)>,
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<10} {:<66} {:>14} {:<6} {:>10}  vs",
        "section", "benchmark", "median", "unit", "ratio"
    );
    println!("{}", "-".repeat(128));
    for r in rows {
        let value = if r.value >= 100.0 {
            format!("{:.0}", r.value)
        } else {
            format!("{:.3}", r.value)
        };
        let (ratio, vs) = match &r.ratio {
            Some((x, vs)) => (format!("{x:.2}x"), format!("of {vs}")),
            None => ("baseline".to_string(), String::new()),
        };
        println!(
            "{:<10} {:<66} {:>14} {:<6} {:>10}  {}",
            r.section, r.name, value, r.unit, ratio, vs
        );
    }
}

/// A typical service message, hand-serialised (68 bytes):
/// `decryptedMessageLayer{random_bytes: 31 bytes, layer: 144, in_seq_no: 2, out_seq_no: 3,
///  message: decryptedMessageService{random_id, action: decryptedMessageActionSetMessageTTL{30}}}`.
fn service_message() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x1be3_1789u32.to_le_bytes()); // decryptedMessageLayer
    b.push(31); // random_bytes: TL bytes, 1-byte length + 31 bytes = 32
    b.extend((0..31u8).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    b.extend_from_slice(&144i32.to_le_bytes()); // layer
    b.extend_from_slice(&2i32.to_le_bytes()); // in_seq_no (creator: even)
    b.extend_from_slice(&3i32.to_le_bytes()); // out_seq_no (creator: odd)
    b.extend_from_slice(&0x7316_4160u32.to_le_bytes()); // decryptedMessageService
    b.extend_from_slice(&0x0123_4567_89ab_cdefi64.to_le_bytes()); // random_id
    b.extend_from_slice(&0xa173_3aecu32.to_le_bytes()); // decryptedMessageActionSetMessageTTL
    b.extend_from_slice(&30i32.to_le_bytes()); // ttl_seconds
    b
}

fn main() {
    // `cargo bench` passes `--bench`; arguments are ignored.
    let s = settings();
    let mut rows = Vec::new();
    println!(
        "secret-core benchmarks: median of {} interleaved rounds, batches of ~{} ms{}",
        s.reps,
        s.target.as_millis(),
        if s.reps < 21 { " [BENCH_QUICK]" } else { "" }
    );

    // ---- (1) one service message ---------------------------------------------------------
    let key = AuthKey::from_array(std::array::from_fn(|i| (i as u8).wrapping_mul(29) ^ 0x5c));
    let payload = service_message();
    assert_eq!(payload.len(), 68);
    let data = encrypt_message(&key, 0, &payload, &mut SeededRandom::new(1));
    assert_eq!(
        decrypt_message(&key, 0, &data).ok().as_deref(),
        Some(&payload[..])
    );
    let padded_len = data.len() - 24;
    let pad = padded_len - 4 - payload.len();
    assert!(padded_len <= 256);
    let mut forged = data.clone();
    forged[30] ^= 1;
    let (aes_key, aes_iv) = ([0x11u8; 32], [0x22u8; 32]);
    // The message rows draw from the production RNG, as the daemon does.
    let mut rng = SystemRandom::new();
    let mut rng_prim = SystemRandom::new();
    let mut rng_fill = SystemRandom::new();
    let plain = vec![7u8; padded_len];
    let kb = key.as_bytes();
    let mk16 = [3u8; 16];
    // The primitives of one message and nothing else: msg_key = SHA-256(key part || plaintext),
    // the KDF's two SHA-256 over 52 bytes each, one IGE pass (with its key schedule) over the
    // padded plaintext, and (encrypt only) the padding drawn from the OS RNG.
    let primitives = |ige: IgeFn, rng: Option<&mut SystemRandom>| {
        black_box(sha256(&[&kb[88..120], black_box(&plain)]));
        black_box(sha256(&[&mk16, &kb[0..36]]));
        black_box(sha256(&[&kb[40..76], &mk16]));
        let mut buf = [7u8; 1280];
        let buf = &mut buf[..padded_len];
        if let Some(r) = rng {
            r.fill(&mut buf[padded_len - pad..]);
        }
        ige(black_box(&aes_key), black_box(&aes_iv), black_box(buf)).ok();
    };
    let mut group = vec![
        bench(
            format!(
                "encrypt primitives alone: 3 SHA-256, IGE over {padded_len} B, {pad} B from SystemRandom"
            ),
            || primitives(aes_ige_encrypt, Some(&mut rng_prim)),
        ),
        bench(
            format!(
                "encrypt_message ({} B service msg -> {} B data, SystemRandom)",
                payload.len(),
                data.len()
            ),
            || {
                black_box(encrypt_message(
                    black_box(&key),
                    0,
                    black_box(&payload),
                    &mut rng,
                ));
            },
        ),
        bench(
            format!("  of which: AES-256-IGE alone, {padded_len} B (incl. key setup)"),
            || {
                let mut buf = [7u8; 256];
                let buf = &mut buf[..padded_len];
                aes_ige_encrypt(black_box(&aes_key), black_box(&aes_iv), black_box(buf)).ok();
            },
        ),
        bench(
            format!("  of which: SystemRandom fill of {pad} B padding"),
            || {
                let mut b = [0u8; 1024];
                rng_fill.fill(&mut b[..pad]);
                black_box(&b);
            },
        ),
    ];
    let ns = measure_group(&s, &mut group);
    push_group(
        &mut rows,
        "message",
        &group,
        &ns,
        "ns/op",
        "enc primitives",
        |t| t,
    );
    drop(group);
    let mut group = vec![
        bench(
            format!("decrypt primitives alone: 3 SHA-256, IGE decrypt over {padded_len} B"),
            || primitives(aes_ige_decrypt, None),
        ),
        bench("decrypt_message (same data)", || {
            black_box(decrypt_message(black_box(&key), 0, black_box(&data)).ok());
        }),
        bench("decrypt_message, forged (msg_key mismatch)", || {
            black_box(decrypt_message(black_box(&key), 0, black_box(&forged)).is_err());
        }),
    ];
    let ns = measure_group(&s, &mut group);
    push_group(
        &mut rows,
        "message",
        &group,
        &ns,
        "ns/op",
        "dec primitives",
        |t| t,
    );
    drop(group);

    // ---- (2) AES-256-IGE throughput over 1 MiB ---------------------------------------------
    const MIB: usize = 1 << 20;
    let fresh = || -> Vec<u8> { (0..MIB).map(|i| (i as u8).wrapping_mul(13)).collect() };
    let (mut b_one, mut b_chain, mut b_ecb, mut b_calls) = (fresh(), fresh(), fresh(), fresh());
    let (mut b_enc, mut b_dec) = (fresh(), fresh());
    let k32: [u8; 32] = std::array::from_fn(|i| i as u8);
    let iv32: [u8; 32] = std::array::from_fn(|i| (i as u8) ^ 0xa5);
    let mut group = vec![
        bench(
            "AES-256 single blocks, one at a time (aes256_encrypt_single_blocks), 1 MiB",
            || {
                aes256_encrypt_single_blocks(black_box(&k32), black_box(&mut b_one));
            },
        ),
        bench(
            "AES-256 one encrypt_block call per block (backend dispatch each call), 1 MiB",
            || {
                aes256_encrypt_block_calls(black_box(&k32), black_box(&mut b_calls));
            },
        ),
        bench(
            "AES-256 single blocks chained (each block xor the previous output), 1 MiB",
            || {
                aes256_chained_blocks(black_box(&k32), black_box(&mut b_chain));
            },
        ),
        bench(
            "AES-256 batched blocks, ECB (aes256_encrypt_blocks), 1 MiB",
            || {
                aes256_encrypt_blocks(black_box(&k32), black_box(&mut b_ecb));
            },
        ),
        bench("AES-256-IGE encrypt (aes_ige_encrypt), 1 MiB", || {
            aes_ige_encrypt(black_box(&k32), black_box(&iv32), black_box(&mut b_enc)).ok();
        }),
        bench("AES-256-IGE decrypt (aes_ige_decrypt), 1 MiB", || {
            aes_ige_decrypt(black_box(&k32), black_box(&iv32), black_box(&mut b_dec)).ok();
        }),
    ];
    let ns = measure_group(&s, &mut group);
    push_group(
        &mut rows,
        "aes",
        &group,
        &ns,
        "MB/s",
        "single blocks",
        |t| MIB as f64 / (t / 1e9) / 1e6,
    );
    drop(group);

    // ---- (3) 2048-bit modular exponentiation ----------------------------------------------
    let p = TELEGRAM_DH_PRIME;
    let mut r = SeededRandom::new(3);
    let mut exp = [0u8; 256];
    r.fill(&mut exp);
    exp[0] |= 0x80; // a full 2048-bit exponent
    let mut base_v = [0u8; 256];
    r.fill(&mut base_v);
    base_v[0] &= 0x7f; // < p
    let reference = modpow_num_bigint(&base_v, &exp, &p);
    assert_eq!(modpow_ct(&base_v, &exp, &p).ok(), Some(reference.clone()));
    assert_eq!(
        bench_support::modpow_ct_u2048(&base_v, &exp, &p).to_vec(),
        reference
    );
    assert_eq!(
        bench_support::modpow_ct_u2048_amm(&base_v, &exp, &p).to_vec(),
        reference
    );
    let cfg = DhConfig::validate(3, &p, 1).expect("Telegram prime");
    let mut kr = SeededRandom::new(4);
    let peer = generate_key_pair(&cfg, &mut kr, &[]).expect("pair").public;
    let secret = DhSecret::from_array(exp);
    let mut group = vec![
        bench(
            "modpow num-bigint 0.5 (variable time), 2048-bit exp",
            || {
                black_box(modpow_num_bigint(black_box(&base_v), black_box(&exp), &p));
            },
        ),
        bench(
            "modpow_ct: crypto-bigint BoxedMontyForm (const. time)",
            || {
                black_box(modpow_ct(black_box(&base_v), black_box(&exp), &p).ok());
            },
        ),
        bench(
            "crypto-bigint U2048 FixedMontyForm::pow (const. time)",
            || {
                black_box(bench_support::modpow_ct_u2048(
                    black_box(&base_v),
                    black_box(&exp),
                    &p,
                ));
            },
        ),
        bench(
            "crypto-bigint U2048 FixedMontyForm::pow_amm (const. time)",
            || {
                black_box(bench_support::modpow_ct_u2048_amm(
                    black_box(&base_v),
                    black_box(&exp),
                    &p,
                ));
            },
        ),
        bench("generate_key_pair (g = 3)", || {
            black_box(generate_key_pair(&cfg, &mut kr, &[0x5a; 256]).ok());
        }),
        bench("compute_shared_key (range check + modpow_ct)", || {
            black_box(compute_shared_key(&cfg, &secret, black_box(&peer)).ok());
        }),
        bench("DhConfig::validate, known prime (table hit)", || {
            black_box(DhConfig::validate(3, black_box(&p), 1).ok());
        }),
    ];
    let ns = measure_group(&s, &mut group);
    push_group(&mut rows, "dh", &group, &ns, "ms/op", "num-bigint", |t| {
        t / 1e6
    });
    drop(group);

    // One-off: the cost of validating an unknown prime (≈ 66 exponentiations), against one
    // num-bigint modpow measured right before it.
    let slow = Settings {
        reps: if s.reps < 21 { 1 } else { 3 },
        target: Duration::ZERO,
    };
    let mut group = vec![
        bench(
            "modpow num-bigint 0.5 (variable time), 2048-bit exp",
            || {
                black_box(modpow_num_bigint(black_box(&base_v), black_box(&exp), &p));
            },
        ),
        bench(
            "full safe-prime test, unknown p (Fermat + 65 MR rounds)",
            || {
                black_box(bench_support::is_safe_prime_uncached(black_box(&p)));
            },
        ),
    ];
    let ns = measure_group(&slow, &mut group);
    push_group(
        &mut rows,
        "dh-slow",
        &group,
        &ns,
        "ms/op",
        "num-bigint",
        |t| t / 1e6,
    );
    drop(group);

    print_table(&rows);
}

/// AES-256 block by block where each block depends on the previous output (as in CBC or IGE),
/// in one backend session like [`aes256_encrypt_single_blocks`]: the latency floor of any
/// sequential mode, shown beside the single-block baseline.
fn aes256_chained_blocks(key: &[u8; 32], buf: &mut [u8]) {
    use aes::cipher::consts::U16;
    use aes::cipher::{BlockCipherEncBackend, BlockCipherEncClosure, BlockSizeUser, KeyInit};

    struct Chained<'a>(&'a mut [aes::Block]);
    impl BlockSizeUser for Chained<'_> {
        type BlockSize = U16;
    }
    impl BlockCipherEncClosure for Chained<'_> {
        fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
            let mut prev = aes::Block::default();
            for block in self.0 {
                for (b, p) in block.iter_mut().zip(prev.iter()) {
                    *b ^= p;
                }
                backend.encrypt_block(block.into());
                prev = *block;
            }
        }
    }
    use aes::cipher::BlockCipherEncrypt as _;
    let (blocks, _tail) = aes::Block::slice_as_chunks_mut(buf);
    aes::Aes256::new(key.into()).encrypt_with_backend(Chained(blocks));
}
