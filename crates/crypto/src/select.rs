//! Which AES implementation runs: our own kernels ([`crate::vaes`], [`crate::lanes`]) where
//! the CPU has them, the environment allows them (`MTPROXY_AES`) and a self-test against
//! aws-lc passes; aws-lc otherwise. Decided once per process and kernel.

use crate::{lanes, vaes};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// Whether to use one of our own AES kernels, decided once per process and kept in `cell`
/// (0 undecided, 1 yes, 2 no): `allowed` (CPU and environment) and `self_test` passes.
pub(crate) fn kernel_decided(
    cell: &AtomicU8,
    allowed: fn() -> bool,
    self_test: fn() -> bool,
) -> bool {
    match cell.load(Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = allowed() && self_test();
            cell.store(if yes { 1 } else { 2 }, Relaxed);
            yes
        }
    }
}

/// `MTPROXY_AES` in the environment: `aesni` turns the VAES kernels off, `aws-lc` every
/// kernel of ours (for comparisons and as a way out).
fn aes_switch_is(value: &str) -> bool {
    std::env::var_os("MTPROXY_AES").is_some_and(|v| v == value)
}

/// The CPU has the VAES kernels and the environment does not turn them off. Each user
/// also checks the kernel against aws-lc once.
pub(crate) fn vaes_allowed() -> bool {
    !aes_switch_is("aesni") && !aes_switch_is("aws-lc") && vaes::cpu_has()
}

/// The CPU has AES-NI for the multi-chain CBC kernel and the environment does not turn
/// our kernels off.
pub(crate) fn lanes_allowed() -> bool {
    !aes_switch_is("aws-lc") && lanes::cpu_has()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a CPU with VAES the kernels must actually be in use (else the CTR and CBC tests
    /// only compared aws-lc with itself).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernels_in_use_where_the_cpu_has_them() {
        if std::env::var_os("MTPROXY_AES").is_some() {
            return;
        }
        assert_eq!(crate::ctr::vaes_usable(), vaes::cpu_has());
        assert_eq!(crate::cbc::vaes_decrypt_usable(), vaes::cpu_has());
        assert_eq!(crate::cbc::lanes_usable(), lanes::cpu_has());
    }
}
