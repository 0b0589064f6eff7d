//! `error_policy`: the backoff after a failed pass, by error kind.

use std::time::Duration;

use crate::engine::error_policy;
use crate::error::Error;

#[test]
fn backoff_doubles_per_failure_from_a_base_per_kind_up_to_a_cap() {
    let store = Error::Store(sqlx::Error::PoolTimedOut);
    let docker = Error::Docker {
        context: "starting a container".into(),
        source: bollard::errors::Error::RequestTimeoutError,
    };
    let other = Error::step("readiness", "refused");
    let ms = Duration::from_millis;
    // (error, base, cap): the store recovers soonest, the host engine next.
    for (e, base, cap) in [
        (&store, ms(200), Duration::from_secs(10)),
        (&docker, ms(500), Duration::from_secs(30)),
        (&other, Duration::from_secs(1), Duration::from_secs(60)),
    ] {
        assert_eq!(error_policy(e, 1), base, "{e}");
        assert_eq!(error_policy(e, 2), base * 2, "{e}");
        assert_eq!(error_policy(e, 3), base * 4, "{e}");
        assert_eq!(error_policy(e, 40), cap, "{e}");
        assert_eq!(error_policy(e, u32::MAX), cap, "{e}");
        // Never shorter for more failures in a row.
        let delays: Vec<Duration> = (1..30).map(|n| error_policy(e, n)).collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{e}: {delays:?}");
    }
    // A zeroth failure (none yet) waits the base, not less.
    assert_eq!(error_policy(&other, 0), Duration::from_secs(1));
}
