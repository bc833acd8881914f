//! The startup check of file descriptors against the sessions a process
//! is configured to serve (seed: "Not enough file descriptors ...").

/// What a process can afford: the limits found, the seed's two figures,
/// and the session cap it will serve with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorPlan {
    /// The service checked (`imap`, `pop`, `http`, `lmtp`).
    pub service: String,
    /// Sessions per process the configuration asks for.
    pub wanted_sessions: u64,
    /// Descriptors budgeted per session.
    pub per_session: u64,
    /// Descriptors kept for everything other than sessions.
    pub reserve: u64,
    /// The soft RLIMIT_NOFILE in force after any raise.
    pub soft_limit: u64,
    /// The hard RLIMIT_NOFILE.
    pub hard_limit: u64,
    /// `wanted_sessions * per_session + reserve`: the `ulimit -n` to recommend.
    pub recommended: u64,
    /// `round((soft_limit - reserve) / per_session)`, 0 when the limit
    /// does not exceed the reserve.
    pub possible: u64,
    /// Sessions this process will accept: `wanted_sessions` when the limit
    /// allows them, else `possible` (at least 1).
    pub session_cap: u64,
    /// The Critical log message when the limit is short, else `None`.
    pub message: Option<String>,
}

impl DescriptorPlan {
    /// True when the limit is too low for the configured sessions.
    pub fn is_short(&self) -> bool {
        self.message.is_some()
    }
}

/// The pure arithmetic of the check at a given soft limit (no system
/// calls). A `per_session` of 0 is treated as 1.
pub fn plan_descriptors(
    service: &str,
    wanted_sessions: u64,
    per_session: u64,
    reserve: u64,
    soft_limit: u64,
    hard_limit: u64,
) -> DescriptorPlan {
    let per = per_session.max(1);
    let recommended = wanted_sessions.saturating_mul(per).saturating_add(reserve);
    let possible = if soft_limit <= reserve {
        0
    } else {
        let free = soft_limit - reserve;
        // round half up: floor(free / per + 1/2)
        free / per + u64::from((free % per).saturating_mul(2) >= per)
    };
    let (session_cap, message) = if soft_limit < recommended {
        (
            possible.max(1),
            Some(format!(
                "Not enough file descriptors to support {wanted_sessions} sessions per process; \
                 Recommend ulimit -n {recommended} or {possible} sessions per process."
            )),
        )
    } else {
        (wanted_sessions, None)
    };
    DescriptorPlan {
        service: service.to_string(),
        wanted_sessions,
        per_session: per,
        reserve,
        soft_limit,
        hard_limit,
        recommended,
        possible,
        session_cap,
        message,
    }
}

/// Reads RLIMIT_NOFILE, raises the soft limit toward the hard limit when
/// it is below what the sessions need, and plans the session cap from the
/// limit then in force. Never fails: if the limit cannot be read, the
/// check plans with 1024 (the usual default) and says so in the message's
/// figures.
pub fn check_descriptors(
    service: &str,
    wanted_sessions: u64,
    per_session: u64,
    reserve: u64,
) -> DescriptorPlan {
    let per = per_session.max(1);
    let recommended = wanted_sessions.saturating_mul(per).saturating_add(reserve);
    let (mut soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot read RLIMIT_NOFILE ({e}); assuming 1024");
            (1024, 1024)
        }
    };
    if soft < recommended && hard > soft {
        match rlimit::increase_nofile_limit(recommended) {
            Ok(raised) => soft = raised,
            Err(e) => tracing::warn!("cannot raise RLIMIT_NOFILE from {soft} toward {hard}: {e}"),
        }
    }
    plan_descriptors(service, wanted_sessions, per, reserve, soft, hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_three_examples_at_1024() {
        let http = plan_descriptors("http", 6000, 2, 851, 1024, 1024);
        assert_eq!(
            (http.recommended, http.possible, http.session_cap),
            (12851, 87, 87)
        );
        assert_eq!(
            http.message.as_deref(),
            Some(
                "Not enough file descriptors to support 6000 sessions per process; \
                 Recommend ulimit -n 12851 or 87 sessions per process."
            )
        );
        let pop = plan_descriptors("pop", 600, 3, 851, 1024, 1024);
        assert_eq!(
            (pop.recommended, pop.possible, pop.session_cap),
            (2651, 58, 58)
        );
        assert_eq!(
            pop.message.as_deref(),
            Some(
                "Not enough file descriptors to support 600 sessions per process; \
                 Recommend ulimit -n 2651 or 58 sessions per process."
            )
        );
        let imap = plan_descriptors("imap", 4000, 3, 851, 1024, 1024);
        assert_eq!(
            (imap.recommended, imap.possible, imap.session_cap),
            (12851, 58, 58)
        );
        assert_eq!(
            imap.message.as_deref(),
            Some(
                "Not enough file descriptors to support 4000 sessions per process; \
                 Recommend ulimit -n 12851 or 58 sessions per process."
            )
        );
    }

    #[test]
    fn enough_descriptors_serves_what_is_configured() {
        let p = plan_descriptors("imap", 4000, 3, 851, 65536, 65536);
        assert!(!p.is_short());
        assert_eq!(p.session_cap, 4000);
        // exactly the recommended figure is enough
        let p = plan_descriptors("imap", 4000, 3, 851, 12851, 12851);
        assert!(!p.is_short());
    }

    #[test]
    fn limit_at_or_below_reserve_still_serves_one() {
        let p = plan_descriptors("pop", 600, 3, 851, 851, 851);
        assert_eq!((p.possible, p.session_cap), (0, 1));
        assert!(p
            .message
            .as_deref()
            .is_some_and(|m| m.contains(" or 0 sessions")));
        let p = plan_descriptors("pop", 600, 3, 851, 100, 100);
        assert_eq!((p.possible, p.session_cap), (0, 1));
    }

    #[test]
    fn rounding_is_half_up_and_zero_per_session_is_one() {
        // (1024 - 851) / 2 = 86.5 -> 87; (1024 - 851) / 3 = 57.67 -> 58
        assert_eq!(plan_descriptors("x", 9999, 2, 851, 1024, 1024).possible, 87);
        assert_eq!(plan_descriptors("x", 9999, 3, 851, 1024, 1024).possible, 58);
        // 10 / 4 = 2.5 -> 3; 9 / 4 = 2.25 -> 2
        assert_eq!(plan_descriptors("x", 9999, 4, 0, 10, 10).possible, 3);
        assert_eq!(plan_descriptors("x", 9999, 4, 0, 9, 9).possible, 2);
        assert_eq!(plan_descriptors("x", 10, 0, 0, 5, 5).per_session, 1);
    }

    #[test]
    fn huge_figures_do_not_overflow() {
        let p = plan_descriptors("x", u64::MAX, 1000, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(p.recommended, u64::MAX);
    }

    #[test]
    fn check_reads_the_real_limit() {
        let p = check_descriptors("imap", 1, 1, 0);
        assert!(p.soft_limit >= 1);
        assert_eq!(p.session_cap, 1);
    }
}
