//! Runs a hot loop compiled for AVX2 where the x86 CPU has it, from a portable binary.
//!
//! The release build targets baseline x86-64 (SSE2) so it runs on any x86 machine; on this
//! project's development machine the same loops compiled with AVX2 are about twice as fast
//! (README "Speed": YUYV decode 0.61 -> 0.18 ms with `target-cpu=x86-64-v3`). [`with_avx2!`]
//! gives that per loop, with a run-time check, and nothing changes elsewhere: rustc never fuses a
//! multiply and an add (no FMA contraction), so results are the same bits either way.

/// Evaluates `$call` inside a function compiled with AVX2 when the CPU has it (x86_64), and as
/// is otherwise. `$call` should call `#[inline(always)]` code, so that the compiler generates it
/// again inside the AVX2 function.
macro_rules! with_avx2 {
    ($call:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, detected at run time.
                unsafe { with_avx2(|| $call) }
            } else {
                $call
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $call
        }
    }};
}

pub(crate) use with_avx2;

/// As [`with_avx2!`], with AVX-512 (F, BW, VL, DQ) where the CPU has it, else AVX2, else as is.
macro_rules! with_avx512 {
    ($call:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2")]
            fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512dq")
            {
                // SAFETY: the CPU has these AVX-512 subsets, detected at run time.
                unsafe { with_avx512(|| $call) }
            } else {
                crate::simd::with_avx2!($call)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $call
        }
    }};
}

pub(crate) use with_avx512;

/// Asks the CPU to start loading `bytes` into its caches, one request per 64-byte line, without
/// waiting for them. A hint only: it changes no result, and does nothing on other architectures.
#[inline]
pub fn prefetch_read(bytes: &[u8]) {
    const LINE: usize = 64;
    let start = bytes.as_ptr() as usize;
    // From the line holding the first byte to the one holding the last.
    let first_offset = start % LINE;
    let mut offset = 0;
    while offset < bytes.len() + first_offset {
        let at = bytes.as_ptr().wrapping_add(offset).wrapping_sub(first_offset);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it never faults, whatever the address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast())
        };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: PRFM is a hint: it never faults and writes no register or memory.
        unsafe {
            std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) at, options(nostack, readonly, preserves_flags))
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = at;
        offset += LINE;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefetching_any_slice_is_harmless() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for (start, len) in [(0, 0), (0, 1000), (1, 63), (63, 2), (999, 1), (1000, 0), (17, 500)] {
            super::prefetch_read(&bytes[start..start + len]);
        }
        assert_eq!(bytes, (0..1000u32).map(|i| i as u8).collect::<Vec<_>>());
    }
}
