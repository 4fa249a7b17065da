//! Randomness from the kernel (getrandom), for message ids, session
//! tokens, salts and jitter.

use ring::rand::{SecureRandom, SystemRandom};

/// Fills `buf` with random bytes; an error only on a broken system.
pub fn fill(buf: &mut [u8]) -> Result<(), String> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| "the kernel's random source (getrandom) failed".to_string())
}

/// Uniform in [0, 1); 0.5 if the kernel gives nothing (used for jitter and
/// shuffling, where that is harmless).
pub fn unit() -> f64 {
    let mut b = [0u8; 8];
    if fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_stays_in_range_and_varies() {
        let xs: Vec<f64> = (0..100).map(|_| super::unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }
}
