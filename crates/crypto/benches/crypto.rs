//! Crypto choices on this CPU: what the proxy uses (`mtproxy_crypto::AesCtr` and the CBC
//! chains, on aws-lc-sys and our kernels; RustCrypto `sha2`/`hmac` for hashing) against
//! RustCrypto's `aes`/`ctr` (what the proxy used before) and aws-lc-rs's safe API, for every
//! primitive on the proxy's data and handshake paths.
//!
//! - AES-256-CTR: the obfuscated2 stream (client side, and the DC side in direct mode).
//!   In place, as the relay does it, in 1 KiB (a small MTProto packet) and 16 KiB (the
//!   relay buffer) chunks. aws-lc-rs is driven two ways: in place through
//!   `EncryptingKey::ctr` + `less_safe_encrypt` with the counter carried between calls (what
//!   an integration would do), and through its streaming API (out of place: one extra
//!   buffer).
//! - AES-256-CBC encrypt and decrypt: the ME link (one chain per direction, in place,
//!   chaining carried across calls). Encryption is serial in either library.
//! - SHA-256 and HMAC-SHA-256: the fake-TLS hello check (HMAC over a 517-byte hello) and the
//!   ME key derivation.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the
//! machines are shared, and time spent preempted by other processes is not the cipher's.
//! Throughputs are therefore per CPU-second of one core.
//!
//! `cargo bench -p mtproxy-crypto --bench crypto`; results and the decision are in
//! docs/performance.md.

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, StreamingEncryptingKey,
    UnboundCipherKey, AES_256,
};
use aws_lc_rs::iv::FixedLength;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use mtproxy_crypto::{encrypt_many, AesCbcDecryptor, AesCbcEncryptor, AesCtr};
use sha2::{Digest, Sha256};

/// CPU time of the calling thread.
fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local struct; the clock always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Criterion measurement: the benchmark thread's CPU time, formatted like wall time.
pub struct ThreadCpu {
    wall: WallTime,
}

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, i: Duration) -> Duration {
        thread_cpu_now().saturating_sub(i)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

type C = Criterion<ThreadCpu>;

const KEY: [u8; 32] = [0x42; 32];
const IV: [u8; 16] = [0x17; 16];
const CIPHER_SIZES: [usize; 3] = [1024, 16 * 1024, 64 * 1024];

/// AES-256-CTR with RustCrypto: `Ctr128BE<Aes256Enc>`, boxed as a session held it.
struct RcCtr(Box<ctr::Ctr128BE<aes::Aes256Enc>>);

impl RcCtr {
    fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        use aes::cipher::KeyIvInit;
        RcCtr(Box::new(ctr::Ctr128BE::new(key.into(), iv.into())))
    }

    fn apply(&mut self, buf: &mut [u8]) {
        use aes::cipher::StreamCipher;
        self.0.apply_keystream(buf);
    }
}

/// AES-256-CBC encryption with RustCrypto, one block at a time (CBC encryption is serial).
struct RcCbcEnc {
    cipher: aes::Aes256Enc,
    prev: [u8; 16],
}

impl RcCbcEnc {
    fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        use aes::cipher::KeyInit;
        RcCbcEnc {
            cipher: aes::Aes256Enc::new(key.into()),
            prev: *iv,
        }
    }

    fn encrypt(&mut self, buf: &mut [u8]) {
        use aes::cipher::BlockEncrypt;
        for chunk in buf.chunks_exact_mut(16) {
            for (b, p) in chunk.iter_mut().zip(self.prev.iter()) {
                *b ^= p;
            }
            self.cipher.encrypt_block(aes::Block::from_mut_slice(chunk));
            self.prev.copy_from_slice(chunk);
        }
    }
}

/// AES-256-CBC decryption with RustCrypto: 64-block batches through `decrypt_blocks` (it
/// pipelines 8 blocks), XOR as `u128` (the fastest pure-Rust form found).
struct RcCbcDec {
    cipher: aes::Aes256Dec,
    prev: [u8; 16],
}

impl RcCbcDec {
    fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        use aes::cipher::KeyInit;
        RcCbcDec {
            cipher: aes::Aes256Dec::new(key.into()),
            prev: *iv,
        }
    }

    fn decrypt(&mut self, buf: &mut [u8]) {
        use aes::cipher::BlockDecrypt;
        const BATCH: usize = 64;
        let n = buf.len() / 16 * 16;
        let mut blocks = [aes::Block::default(); BATCH];
        let mut prev = u128::from_ne_bytes(self.prev);
        for group in buf[..n].chunks_mut(16 * BATCH) {
            let count = group.len() / 16;
            for (b, c) in blocks.iter_mut().zip(group.chunks_exact(16)) {
                b.copy_from_slice(c);
            }
            self.cipher.decrypt_blocks(&mut blocks[..count]);
            for (c, d) in group.chunks_exact_mut(16).zip(blocks.iter()) {
                let ct = u128::from_ne_bytes(c.try_into().expect("16"));
                let dt = u128::from_ne_bytes(d.as_slice().try_into().expect("16"));
                c.copy_from_slice(&(dt ^ prev).to_ne_bytes());
                prev = ct;
            }
        }
        self.prev = prev.to_ne_bytes();
    }
}

/// AES-256-CTR with aws-lc-rs, in place: a 128-bit big-endian counter carried between calls
/// (whole blocks only, which is all the bench feeds it).
struct AwsCtr {
    key: EncryptingKey,
    counter: u128,
}

impl AwsCtr {
    fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        let key = UnboundCipherKey::new(&AES_256, key).expect("aes key");
        AwsCtr {
            key: EncryptingKey::ctr(key).expect("ctr key"),
            counter: u128::from_be_bytes(*iv),
        }
    }

    fn apply(&mut self, buf: &mut [u8]) {
        debug_assert_eq!(buf.len() % 16, 0);
        let ctx = EncryptionContext::Iv128(FixedLength::from(self.counter.to_be_bytes()));
        self.key.less_safe_encrypt(buf, ctx).expect("ctr");
        self.counter = self.counter.wrapping_add((buf.len() / 16) as u128);
    }
}

/// AES-256-CBC encryption with aws-lc-rs, in place, chaining carried between calls.
struct AwsCbcEnc {
    key: EncryptingKey,
    prev: [u8; 16],
}

impl AwsCbcEnc {
    fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        let key = UnboundCipherKey::new(&AES_256, key).expect("aes key");
        AwsCbcEnc {
            key: EncryptingKey::cbc(key).expect("cbc key"),
            prev: *iv,
        }
    }

    fn encrypt(&mut self, buf: &mut [u8]) {
        let ctx = EncryptionContext::Iv128(FixedLength::from(self.prev));
        self.key.less_safe_encrypt(buf, ctx).expect("cbc");
        self.prev.copy_from_slice(&buf[buf.len() - 16..]);
    }
}

/// AES-256-CBC decryption with aws-lc-rs, in place, chaining carried between calls.
struct AwsCbcDec {
    key: DecryptingKey,
    prev: [u8; 16],
}

impl AwsCbcDec {
    fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        let key = UnboundCipherKey::new(&AES_256, key).expect("aes key");
        AwsCbcDec {
            key: DecryptingKey::cbc(key).expect("cbc key"),
            prev: *iv,
        }
    }

    fn decrypt(&mut self, buf: &mut [u8]) {
        let mut last = [0u8; 16];
        last.copy_from_slice(&buf[buf.len() - 16..]);
        let ctx = DecryptionContext::Iv128(FixedLength::from(self.prev));
        self.key.decrypt(buf, ctx).expect("cbc");
        self.prev = last;
    }
}

/// All implementations produce the same bytes (otherwise the comparison means nothing).
fn check_equivalence() {
    let base = vec![7u8; 4096];
    let (mut a, mut b, mut r) = (base.clone(), base.clone(), base.clone());
    let mut ours = AesCtr::new(&KEY, &IV);
    let mut aws = AwsCtr::new(&KEY, &IV);
    let mut rc = RcCtr::new(&KEY, &IV);
    for chunk in [16usize, 1024, 3056] {
        let (x, y, z) = (&mut a[..chunk], &mut b[..chunk], &mut r[..chunk]);
        ours.apply(x);
        aws.apply(y);
        rc.apply(z);
        assert_eq!(x, y, "CTR differs from aws-lc-rs");
        assert_eq!(x, z, "CTR differs from RustCrypto");
    }
    let (mut a, mut b, mut r) = (base.clone(), base.clone(), base.clone());
    let mut ours = AesCbcEncryptor::new(&KEY, &IV);
    let mut aws = AwsCbcEnc::new(&KEY, &IV);
    let mut rc = RcCbcEnc::new(&KEY, &IV);
    ours.encrypt(&mut a[..1024]);
    ours.encrypt(&mut a[1024..]);
    aws.encrypt(&mut b[..2048]);
    aws.encrypt(&mut b[2048..]);
    rc.encrypt(&mut r[..48]);
    rc.encrypt(&mut r[48..]);
    assert_eq!(a, b, "CBC encryption differs from aws-lc-rs");
    assert_eq!(a, r, "CBC encryption differs from RustCrypto");
    let mut ours = AesCbcDecryptor::new(&KEY, &IV);
    let mut aws = AwsCbcDec::new(&KEY, &IV);
    let mut rc = RcCbcDec::new(&KEY, &IV);
    ours.decrypt(&mut a[..48]);
    ours.decrypt(&mut a[48..]);
    aws.decrypt(&mut b[..1024]);
    aws.decrypt(&mut b[1024..]);
    rc.decrypt(&mut r[..2064]);
    rc.decrypt(&mut r[2064..]);
    assert_eq!(a, base, "CBC round trip");
    assert_eq!(b, base, "CBC round trip (aws-lc-rs)");
    assert_eq!(r, base, "CBC round trip (RustCrypto)");
}

fn ctr(c: &mut C) {
    check_equivalence();
    let mut g = c.benchmark_group("aes256_ctr");
    for size in CIPHER_SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        let mut ours = AesCtr::new(&KEY, &IV);
        g.bench_function(BenchmarkId::new("proxy", size), |b| {
            b.iter(|| ours.apply(black_box(&mut buf)))
        });
        let mut rc = RcCtr::new(&KEY, &IV);
        g.bench_function(BenchmarkId::new("rustcrypto", size), |b| {
            b.iter(|| rc.apply(black_box(&mut buf)))
        });
        let mut aws = AwsCtr::new(&KEY, &IV);
        g.bench_function(BenchmarkId::new("aws_lc_rs", size), |b| {
            b.iter(|| aws.apply(black_box(&mut buf)))
        });
        let key = UnboundCipherKey::new(&AES_256, &KEY).expect("aes key");
        let ctx = EncryptionContext::Iv128(FixedLength::from(IV));
        let mut stream = StreamingEncryptingKey::less_safe_ctr(key, ctx).expect("ctr");
        let mut out = vec![0u8; size + 15];
        g.bench_function(BenchmarkId::new("aws_lc_rs_streaming", size), |b| {
            b.iter(|| {
                let n = stream
                    .update(black_box(&buf), &mut out)
                    .expect("ctr")
                    .written()
                    .len();
                black_box(n)
            })
        });
    }
    g.finish();
}

fn cbc(c: &mut C) {
    let mut g = c.benchmark_group("aes256_cbc_encrypt");
    for size in CIPHER_SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        let mut ours = AesCbcEncryptor::new(&KEY, &IV);
        g.bench_function(BenchmarkId::new("proxy", size), |b| {
            b.iter(|| ours.encrypt(black_box(&mut buf)))
        });
        let mut rc = RcCbcEnc::new(&KEY, &IV);
        g.bench_function(BenchmarkId::new("rustcrypto", size), |b| {
            b.iter(|| rc.encrypt(black_box(&mut buf)))
        });
        let mut aws = AwsCbcEnc::new(&KEY, &IV);
        g.bench_function(BenchmarkId::new("aws_lc_rs", size), |b| {
            b.iter(|| aws.encrypt(black_box(&mut buf)))
        });
        // Several ME connections' batches in one pass (`encrypt_many`): the figure is the
        // total bytes of all chains per second.
        for chains in [2usize, 4, 8] {
            g.throughput(Throughput::Bytes((chains * size) as u64));
            let mut bufs = vec![vec![0u8; size]; chains];
            let mut encs: Vec<AesCbcEncryptor> = (0..chains)
                .map(|i| AesCbcEncryptor::new(&KEY, &[i as u8; 16]))
                .collect();
            g.bench_function(
                BenchmarkId::new(format!("proxy_{chains}_chains"), size),
                |b| {
                    b.iter(|| {
                        let mut jobs: Vec<(&mut AesCbcEncryptor, &mut [u8])> = encs
                            .iter_mut()
                            .zip(bufs.iter_mut().map(|b| &mut b[..]))
                            .collect();
                        encrypt_many(black_box(&mut jobs))
                    })
                },
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("aes256_cbc_decrypt");
    for size in CIPHER_SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        let mut ours = AesCbcDecryptor::new(&KEY, &IV);
        g.bench_function(BenchmarkId::new("proxy", size), |b| {
            b.iter(|| ours.decrypt(black_box(&mut buf)))
        });
        let mut rc = RcCbcDec::new(&KEY, &IV);
        g.bench_function(BenchmarkId::new("rustcrypto_batched", size), |b| {
            b.iter(|| rc.decrypt(black_box(&mut buf)))
        });
        let mut aws = AwsCbcDec::new(&KEY, &IV);
        g.bench_function(BenchmarkId::new("aws_lc_rs", size), |b| {
            b.iter(|| aws.decrypt(black_box(&mut buf)))
        });
    }
    g.finish();
}

fn hashes(c: &mut C) {
    let mut g = c.benchmark_group("sha256");
    for size in [64usize, 517, 16 * 1024] {
        g.throughput(Throughput::Bytes(size as u64));
        let data = vec![0x5au8; size];
        g.bench_function(BenchmarkId::new("rustcrypto", size), |b| {
            b.iter(|| Sha256::digest(black_box(&data)))
        });
        g.bench_function(BenchmarkId::new("aws_lc_rs", size), |b| {
            b.iter(|| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, black_box(&data)))
        });
    }
    g.finish();

    // The fake-TLS check: HMAC-SHA-256 keyed with the 16-byte secret over a 517-byte hello
    // (TDLib's size), key set-up included, as the proxy does once per secret per hello.
    let mut g = c.benchmark_group("hmac_sha256");
    let secret = [0x33u8; 16];
    for size in [517usize, 1823] {
        g.throughput(Throughput::Bytes(size as u64));
        let data = vec![0x16u8; size];
        g.bench_function(BenchmarkId::new("rustcrypto", size), |b| {
            b.iter(|| {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&secret).expect("any key");
                m.update(black_box(&data));
                m.finalize().into_bytes()
            })
        });
        g.bench_function(BenchmarkId::new("aws_lc_rs", size), |b| {
            b.iter(|| {
                let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
                aws_lc_rs::hmac::sign(&k, black_box(&data))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu { wall: WallTime });
    targets = ctr, cbc, hashes
}
criterion_main!(benches);
