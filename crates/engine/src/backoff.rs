//! Retry delays: exponential with full jitter, as a pure function of the attempt number and a
//! random fraction, so that it can be tested as a table.

/// The delay before retry number `attempt` (1 for the first retry), in milliseconds:
/// a random point in `[base/2, min(cap, base * 2^(attempt-1))]`. `fraction` is in `[0, 1)`.
pub fn retry_delay_ms(attempt: u32, base_ms: u64, cap_ms: u64, fraction: f64) -> u64 {
    let exp = attempt.saturating_sub(1).min(32);
    let ceiling = base_ms
        .saturating_mul(1u64 << exp)
        .min(cap_ms)
        .max(base_ms / 2);
    let floor = (base_ms / 2).min(ceiling);
    let span = (ceiling - floor) as f64;
    floor + (span * fraction.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::retry_delay_ms;

    #[test]
    fn delays_grow_and_are_capped() {
        let table = [
            // attempt, fraction, expected
            (1, 0.0, 500),
            (1, 1.0, 1_000),
            (2, 1.0, 2_000),
            (4, 1.0, 8_000),
            (10, 1.0, 300_000),
            (40, 1.0, 300_000),
            (40, 0.0, 500),
        ];
        for (attempt, fraction, want) in table {
            assert_eq!(
                retry_delay_ms(attempt, 1_000, 300_000, fraction),
                want,
                "{attempt} {fraction}"
            );
        }
    }
}
