//! Load bounds on the calls a caller can make the gateway send to the IdP: a [`Gate`] admits at
//! most `in_flight` calls at once and `per_second` new ones a second (a token bucket holding one
//! second's worth), and [`Gates`] keeps one gate per caller, bounded in how many callers it
//! holds. A refusal says when to retry ([`Limited::retry_after`]). Depends on nothing in the
//! crate: callers bring their own keys (a keyed digest of a subject, a client IP).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// As many calls as allowed are in flight.
    InFlight,
    /// The calls of the last second used the rate up; a token is back after this long.
    Rate(Duration),
    /// The table of callers is full of active callers (every one with calls in flight or
    /// recent ones): a new caller waits until one idles.
    Crowded,
}

impl Limited {
    /// Whole seconds a caller should wait before retrying (at least 1), for `Retry-After`.
    pub fn retry_after(self) -> u64 {
        match self {
            Limited::InFlight | Limited::Crowded => 1,
            Limited::Rate(wait) => {
                let secs = wait.as_secs();
                let secs = if wait.subsec_nanos() > 0 {
                    secs.saturating_add(1)
                } else {
                    secs
                };
                secs.max(1)
            }
        }
    }

    /// The metric label part: `in_flight`, `rate` or `crowded`.
    pub fn as_label(self) -> &'static str {
        match self {
            Limited::InFlight => "in_flight",
            Limited::Rate(_) => "rate",
            Limited::Crowded => "crowded",
        }
    }
}

struct GateState {
    in_flight: u32,
    tokens: f64,
    at: Instant,
}

/// One bound: calls in flight and a token bucket of `per_second` tokens refilled over a second.
pub struct Gate {
    max_in_flight: u32,
    per_second: f64,
    state: Mutex<GateState>,
}

/// An admitted call: counts as in flight until dropped.
#[must_use = "the call counts as in flight only while its permit lives"]
pub struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

impl Permit {
    /// Gives the permit back as if the call was never admitted: its token returns too (the
    /// call was not made after all).
    pub fn cancel(self) {
        let mut s = self.gate.lock();
        s.tokens = (s.tokens + 1.0).min(self.gate.per_second);
    }
}

impl Gate {
    /// A gate admitting `in_flight` calls at once and `per_second` a second (each at least 1).
    pub fn new(in_flight: u32, per_second: u32) -> Gate {
        Gate::starting_at(in_flight, per_second, Instant::now())
    }

    fn starting_at(in_flight: u32, per_second: u32, now: Instant) -> Gate {
        let per_second = f64::from(per_second.max(1));
        Gate {
            max_in_flight: in_flight.max(1),
            per_second,
            state: Mutex::new(GateState {
                in_flight: 0,
                tokens: per_second,
                at: now,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refill(&self, s: &mut GateState, now: Instant) {
        let elapsed = now.saturating_duration_since(s.at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_second).min(self.per_second);
        s.at = now;
    }

    /// Admits one call now, or says why not.
    pub fn admit(self: &Arc<Self>) -> Result<Permit, Limited> {
        self.admit_at(Instant::now())
    }

    fn admit_at(self: &Arc<Self>, now: Instant) -> Result<Permit, Limited> {
        let mut s = self.lock();
        self.refill(&mut s, now);
        if s.in_flight >= self.max_in_flight {
            return Err(Limited::InFlight);
        }
        if s.tokens < 1.0 {
            let wait = (1.0 - s.tokens) / self.per_second;
            return Err(Limited::Rate(Duration::from_secs_f64(wait.max(0.0))));
        }
        s.tokens -= 1.0;
        s.in_flight += 1;
        drop(s);
        Ok(Permit { gate: self.clone() })
    }

    /// Nothing in flight and the bucket full again: forgetting this gate changes nothing.
    fn idle_at(&self, now: Instant) -> bool {
        let mut s = self.lock();
        self.refill(&mut s, now);
        s.in_flight == 0 && s.tokens >= self.per_second
    }
}

struct Table<K> {
    gates: HashMap<K, Arc<Gate>>,
    swept: Option<Instant>,
}

/// One [`Gate`] per caller, for at most `max_callers` callers at once. When the table is full,
/// idle callers are forgotten (at most once a second); if none is idle, a new caller is
/// [`Limited::Crowded`] rather than admitted unbounded.
pub struct Gates<K> {
    in_flight: u32,
    per_second: u32,
    max_callers: usize,
    table: Mutex<Table<K>>,
}

impl<K: Hash + Eq + Clone> Gates<K> {
    /// Gates of `in_flight` calls at once and `per_second` a second for each caller.
    pub fn new(in_flight: u32, per_second: u32, max_callers: usize) -> Gates<K> {
        Gates {
            in_flight,
            per_second,
            max_callers: max_callers.max(1),
            table: Mutex::new(Table {
                gates: HashMap::new(),
                swept: None,
            }),
        }
    }

    /// Admits one call of `caller` now, or says why not.
    pub fn admit(&self, caller: &K) -> Result<Permit, Limited> {
        self.admit_at(caller, Instant::now())
    }

    fn admit_at(&self, caller: &K, now: Instant) -> Result<Permit, Limited> {
        let gate = {
            let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            match t.gates.get(caller) {
                Some(gate) => gate.clone(),
                None => {
                    if t.gates.len() >= self.max_callers {
                        let recently = t.swept.is_some_and(|at| {
                            now.saturating_duration_since(at) < Duration::from_secs(1)
                        });
                        if recently {
                            return Err(Limited::Crowded);
                        }
                        t.swept = Some(now);
                        // A gate with a permit out is held by it too: never forgotten while in use.
                        t.gates
                            .retain(|_, g| Arc::strong_count(g) > 1 || !g.idle_at(now));
                        if t.gates.len() >= self.max_callers {
                            return Err(Limited::Crowded);
                        }
                    }
                    let gate = Arc::new(Gate::starting_at(self.in_flight, self.per_second, now));
                    t.gates.insert(caller.clone(), gate.clone());
                    gate
                }
            }
        };
        gate.admit_at(now)
    }

    /// Callers held (for tests).
    pub fn callers(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .gates
            .len()
    }
}

/// The key of a client IP's bound: an IPv4 address, or an IPv6 address's /64 (one host is
/// usually given a whole /64); `None` (no IP: not an inet connection) is one caller of its own.
pub fn ip_key(ip: Option<IpAddr>) -> u128 {
    match ip.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }) {
        Some(IpAddr::V4(v4)) => (1 << 64) | u128::from(u32::from(v4)),
        Some(IpAddr::V6(v6)) => u128::from(v6) & !u128::from(u64::MAX) | 2,
        None => 0,
    }
}

/// A caller's bound and everyone's together: the caller's is asked first, so a caller over its
/// own bound never uses up the total; a call the total refuses gives the caller's token back.
pub fn admit_both<K: Hash + Eq + Clone>(
    callers: &Gates<K>,
    caller: &K,
    total: &Arc<Gate>,
) -> Result<(Permit, Permit), (Limited, Scope)> {
    let own = callers.admit(caller).map_err(|l| (l, Scope::Caller))?;
    match total.admit() {
        Ok(all) => Ok((own, all)),
        Err(l) => {
            own.cancel();
            Err((l, Scope::Total))
        }
    }
}

/// Whose bound refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The caller's own.
    Caller,
    /// Everyone's together.
    Total,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_bounds_calls_in_flight_and_per_second() {
        let t0 = Instant::now();
        let gate = Arc::new(Gate::starting_at(2, 3, t0));
        let a = gate.admit_at(t0).unwrap();
        let b = gate.admit_at(t0).unwrap();
        assert_eq!(gate.admit_at(t0).err(), Some(Limited::InFlight));
        drop(a);
        let c = gate.admit_at(t0).unwrap();
        drop((b, c));
        // Three tokens a second: the fourth call in the same instant waits a third of a second.
        match gate.admit_at(t0) {
            Err(Limited::Rate(wait)) => {
                assert!((wait.as_secs_f64() - 1.0 / 3.0).abs() < 0.01, "{wait:?}");
                assert_eq!(Limited::Rate(wait).retry_after(), 1);
            }
            other => panic!("{:?}", other.err()),
        }
        let later = t0 + Duration::from_millis(340);
        drop(gate.admit_at(later).unwrap());
        assert!(gate.admit_at(later).is_err());
        // Never more than one second's worth saved up.
        let much_later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            drop(gate.admit_at(much_later).unwrap());
        }
        assert!(matches!(gate.admit_at(much_later), Err(Limited::Rate(_))));
    }

    #[test]
    fn a_cancelled_permit_gives_its_token_back() {
        let t0 = Instant::now();
        let gate = Arc::new(Gate::starting_at(5, 1, t0));
        gate.admit_at(t0).unwrap().cancel();
        drop(gate.admit_at(t0).unwrap());
        assert!(gate.admit_at(t0).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let cases = [
            (Limited::InFlight, 1),
            (Limited::Crowded, 1),
            (Limited::Rate(Duration::ZERO), 1),
            (Limited::Rate(Duration::from_millis(10)), 1),
            (Limited::Rate(Duration::from_secs(2)), 2),
            (Limited::Rate(Duration::from_millis(2001)), 3),
        ];
        for (limited, want) in cases {
            assert_eq!(limited.retry_after(), want, "{limited:?}");
        }
    }

    #[test]
    fn each_caller_has_its_own_gate_and_the_table_stays_bounded() {
        let t0 = Instant::now();
        let gates: Gates<u32> = Gates::new(1, 1, 2);
        let a = gates.admit_at(&1, t0).unwrap();
        assert_eq!(gates.admit_at(&1, t0).err(), Some(Limited::InFlight));
        let b = gates.admit_at(&2, t0).unwrap();
        // Full of busy callers: a third is turned away, not admitted without a bound.
        assert_eq!(gates.admit_at(&3, t0).err(), Some(Limited::Crowded));
        drop((a, b));
        // Still not idle (their tokens are spent), and the sweep just ran.
        assert_eq!(gates.admit_at(&3, t0).err(), Some(Limited::Crowded));
        // A second later both are idle: forgotten, and the new caller is admitted.
        let later = t0 + Duration::from_secs(2);
        drop(gates.admit_at(&3, later).unwrap());
        assert!(gates.callers() <= 2);
    }

    #[test]
    fn ipv6_clients_share_their_64_and_ipv4_clients_their_address() {
        let key = |ip: &str| ip_key(Some(ip.parse().unwrap()));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_ne!(ip_key(None), key("0.0.0.0"));
    }

    #[test]
    fn the_total_refusing_gives_the_callers_token_back() {
        let t0 = Instant::now();
        let gates: Gates<u32> = Gates::new(10, 1, 10);
        let total = Arc::new(Gate::starting_at(1, 100, t0));
        let held = admit_both(&gates, &1, &total).unwrap();
        assert_eq!(
            admit_both(&gates, &2, &total).err(),
            Some((Limited::InFlight, Scope::Total))
        );
        drop(held);
        // Caller 2's one token a second was given back: it is admitted now.
        assert!(admit_both(&gates, &2, &total).is_ok());
        assert_eq!(
            admit_both(&gates, &2, &total).err().map(|(_, s)| s),
            Some(Scope::Caller)
        );
    }
}
