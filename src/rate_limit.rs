//! Rate limits at the HTTP edge: sign-up and login per client address, writes per user.
//!
//! Each limit is a GCRA quota. On one node the limiters live in this process
//! (`governor`); with `--redis` every node counts against the same quota in
//! Redis (`SharedLimits`), so that a client cannot multiply its quota by
//! spreading requests over the nodes behind a load balancer.
//!
//! The addresses each account logged in from recently are remembered the
//! same way (`KnownLogins`): an account's own login limit does not hold them
//! back, so guesses from elsewhere cannot lock its owner out.

use std::{
    fmt,
    marker::PhantomData,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use redis::{Script, aio::ConnectionManager};

use crate::{
    app::AppState,
    auth::AuthUser,
    config::{RateLimitConfig, Switch},
    error::{ApiError, ApiResult},
};

/// A quota written `COUNT/PERIOD` (`300/3h`, `10/10s`): a burst of COUNT,
/// then one request more every PERIOD/COUNT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl Rate {
    /// The time one request uses up of the quota.
    fn interval(self) -> Duration {
        self.period / self.count.get()
    }

    fn quota(self) -> Quota {
        let interval = self.interval();
        // `parse` rejects periods too short to divide; this is a fallback only.
        Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.count)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("expected COUNT/PERIOD such as `300/3h` or `10/10s`, got {text:?}");
        let (count, period) = text.split_once('/').ok_or_else(invalid)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| invalid())?;
        let period = humantime::parse_duration(period.trim()).map_err(|_| invalid())?;
        if (period / count.get()).is_zero() {
            return Err(invalid());
        }
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.period)
        )
    }
}

/// What a client address is limited in.
#[derive(Debug, Clone, Copy)]
pub enum AddressAction {
    Register,
    Login,
}

/// What a signed-in user is limited in.
#[derive(Debug, Clone, Copy)]
pub enum UserAction {
    Post,
    Reply,
    Vote,
    Follow,
    RoomMessage,
    InboxMessage,
    Upload,
    /// Password checks against one account (login, account deletion), from
    /// any address.
    Login,
}

impl AddressAction {
    const ALL: [AddressAction; 2] = [AddressAction::Register, AddressAction::Login];

    /// Names the action in shared keys.
    fn key(self) -> &'static str {
        match self {
            AddressAction::Register => "register",
            AddressAction::Login => "login",
        }
    }

    fn what(self) -> &'static str {
        match self {
            AddressAction::Register => "sign-ups from your address",
            AddressAction::Login => "login attempts from your address",
        }
    }

    fn rate(self, config: &RateLimitConfig) -> Rate {
        match self {
            AddressAction::Register => config.register,
            AddressAction::Login => config.login,
        }
    }
}

impl UserAction {
    const ALL: [UserAction; 8] = [
        UserAction::Post,
        UserAction::Reply,
        UserAction::Vote,
        UserAction::Follow,
        UserAction::RoomMessage,
        UserAction::InboxMessage,
        UserAction::Upload,
        UserAction::Login,
    ];

    /// Names the action in shared keys.
    fn key(self) -> &'static str {
        match self {
            UserAction::Post => "post",
            UserAction::Reply => "reply",
            UserAction::Vote => "vote",
            UserAction::Follow => "follow",
            UserAction::RoomMessage => "room_message",
            UserAction::InboxMessage => "inbox_message",
            UserAction::Upload => "upload",
            UserAction::Login => "login",
        }
    }

    fn what(self) -> &'static str {
        match self {
            UserAction::Post => "posts",
            UserAction::Reply => "replies",
            UserAction::Vote => "votes",
            UserAction::Follow => "follows and unfollows",
            UserAction::RoomMessage => "room messages",
            UserAction::InboxMessage => "direct messages",
            UserAction::Upload => "uploads",
            UserAction::Login => "login attempts on this account",
        }
    }

    fn rate(self, config: &RateLimitConfig) -> Rate {
        match self {
            UserAction::Post => config.posts,
            UserAction::Reply => config.replies,
            UserAction::Vote => config.votes,
            UserAction::Follow => config.follows,
            UserAction::RoomMessage => config.room_messages,
            UserAction::InboxMessage => config.inbox_messages,
            UserAction::Upload => config.uploads,
            UserAction::Login => config.account_logins,
        }
    }
}

/// One keyed GCRA limiter per action (indexed by the action), or none when
/// limits are off; with `shared`, the quotas are counted in Redis and the
/// process's own limiters stand in only while Redis cannot be reached.
pub struct RateLimits {
    by_address: Vec<DefaultKeyedRateLimiter<IpAddr>>,
    by_user: Vec<DefaultKeyedRateLimiter<i64>>,
    address_rates: Vec<Rate>,
    user_rates: Vec<Rate>,
    shared: Option<SharedLimits>,
    trusted_proxies: Vec<IpAddr>,
    /// Which addresses each account logged in from lately, on this node.
    known_logins: KnownLogins,
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        let on = config.mode == Switch::On;
        RateLimits {
            by_address: AddressAction::ALL
                .iter()
                .filter(|_| on)
                .map(|a| RateLimiter::keyed(a.rate(config).quota()))
                .collect(),
            by_user: UserAction::ALL
                .iter()
                .filter(|_| on)
                .map(|a| RateLimiter::keyed(a.rate(config).quota()))
                .collect(),
            address_rates: AddressAction::ALL.iter().map(|a| a.rate(config)).collect(),
            user_rates: UserAction::ALL.iter().map(|a| a.rate(config)).collect(),
            shared: None,
            trusted_proxies: config.trusted_proxies.clone(),
            known_logins: KnownLogins::new(KNOWN_LOGIN_FOR),
        }
    }

    /// Remembers logins for `known_for` instead of `KNOWN_LOGIN_FOR`.
    #[cfg(test)]
    fn with_known_logins_for(mut self, known_for: Duration) -> Self {
        self.known_logins = KnownLogins::new(known_for);
        self
    }

    /// Counts the quotas in Redis from now on, shared by every node that
    /// uses the same Redis and `prefix`.
    pub fn shared_in(mut self, conn: ConnectionManager, prefix: &str) -> Self {
        self.shared = Some(SharedLimits::new(conn, prefix));
        self
    }

    /// Counts one `action` from `address`, or 429 when over its limit.
    pub async fn check_address(&self, action: AddressAction, address: IpAddr) -> ApiResult<()> {
        let Some(limiter) = self.by_address.get(action as usize) else {
            return Ok(());
        };
        let address = address_key(address);
        let shared_key = || format!("a:{}:{address}", action.key());
        let rate = self.address_rates[action as usize];
        self.count(limiter, &address, shared_key, rate, action.what())
            .await
    }

    /// Counts one `action` by `user_id`, or 429 when over its limit.
    pub async fn check_user(&self, action: UserAction, user_id: i64) -> ApiResult<()> {
        let Some(limiter) = self.by_user.get(action as usize) else {
            return Ok(());
        };
        let shared_key = || format!("u:{}:{user_id}", action.key());
        let rate = self.user_rates[action as usize];
        self.count(limiter, &user_id, shared_key, rate, action.what())
            .await
    }

    /// Counts one password check on `user_id`'s account from `address` (a
    /// login or an account deletion), or 429 when the account is over its
    /// limit. An address that logged in to the account within the last
    /// `KNOWN_LOGIN_FOR` is neither counted nor refused here (its address
    /// limit still holds it): whoever guesses at the account from elsewhere
    /// cannot keep its owner out where the owner usually logs in.
    pub async fn check_account_login(&self, user_id: i64, address: IpAddr) -> ApiResult<()> {
        if !self.enabled() {
            return Ok(());
        }
        let address = address_key(address);
        if self.is_known_login(user_id, address).await {
            return Ok(());
        }
        self.check_user(UserAction::Login, user_id).await
    }

    /// Records a successful login to `user_id`'s account from `address`.
    pub async fn remember_login(&self, user_id: i64, address: IpAddr) {
        if !self.enabled() {
            return;
        }
        let address = address_key(address);
        // This node's memory too, for when Redis is away.
        self.known_logins.remember(user_id, address);
        if let Some(shared) = &self.shared {
            shared
                .remember_login(user_id, address, self.known_logins.known_for)
                .await;
        }
    }

    /// Redis's answer when the limits are shared and it answers, else this
    /// node's.
    async fn is_known_login(&self, user_id: i64, address: IpAddr) -> bool {
        if let Some(shared) = &self.shared
            && let Some(known) = shared
                .is_known_login(user_id, address, self.known_logins.known_for)
                .await
        {
            return known;
        }
        self.known_logins.contains(user_id, address)
    }

    /// Counts one request in Redis when the limits are shared and Redis
    /// answers, else in this node's `limiter`.
    async fn count<K>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        shared_key: impl FnOnce() -> String,
        rate: Rate,
        what: &str,
    ) -> ApiResult<()>
    where
        K: std::hash::Hash + Eq + Clone,
    {
        if let Some(shared) = &self.shared
            && let Some(outcome) = shared.check(&shared_key(), rate, what).await
        {
            return outcome;
        }
        check(limiter, key, what)
    }

    /// Forgets keys whose quota is full again, so memory holds only the
    /// clients seen within their recent periods.
    pub fn evict_idle(&self) {
        for limiter in &self.by_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in &self.by_user {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    pub fn enabled(&self) -> bool {
        !self.by_user.is_empty()
    }

    /// The client's address: the TCP peer, or, when the peer is a trusted
    /// proxy, the nearest untrusted address in `X-Forwarded-For`.
    fn client_address(&self, peer: IpAddr, parts: &Parts) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.contains(&ip.to_canonical());
        if !trusted(&peer) {
            return peer;
        }
        // Each proxy appends the address it heard from, so read right to
        // left; whatever lies left of the first untrusted hop is the
        // client's own claim and is never read.
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for entry in forwarded.into_iter().rev() {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) if trusted(&ip) => continue,
                Ok(ip) => return ip,
                Err(_) => break,
            }
        }
        peer
    }
}

fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K, what: &str) -> ApiResult<()>
where
    K: std::hash::Hash + Eq + Clone,
{
    limiter.check_key(key).map_err(|not_until| {
        ApiError::too_many_requests(what, not_until.wait_time_from(limiter.clock().now()))
    })
}

/// How long a successful login keeps its address exempt from the account's
/// own login limit (`RateLimits::check_account_login`).
const KNOWN_LOGIN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most (account, address) pairs one node remembers; the least used go
/// first. 64 Ki pairs take a few MiB.
const KNOWN_LOGINS_MOST: usize = 64 * 1024;
/// Most addresses Redis remembers per account: its newest logins'.
const KNOWN_LOGINS_PER_ACCOUNT: u32 = 32;

/// The addresses each account logged in from lately, on this node: a
/// bounded cache of (account, address) to the last login's time.
struct KnownLogins {
    last_login: quick_cache::sync::Cache<(i64, IpAddr), Instant>,
    known_for: Duration,
}

impl KnownLogins {
    fn new(known_for: Duration) -> Self {
        KnownLogins {
            last_login: quick_cache::sync::Cache::new(KNOWN_LOGINS_MOST),
            known_for,
        }
    }

    fn remember(&self, user_id: i64, address: IpAddr) {
        self.last_login.insert((user_id, address), Instant::now());
    }

    fn contains(&self, user_id: i64, address: IpAddr) -> bool {
        self.last_login
            .get(&(user_id, address))
            .is_some_and(|at| at.elapsed() < self.known_for)
    }
}

/// GCRA in Redis: each key holds the time at which its quota is full again
/// plus one interval (the "theoretical arrival time", in milliseconds of the
/// Redis server's clock, so nodes' clocks do not matter; 13 digits, which
/// Lua writes back exactly). A request is allowed while that time lies less
/// than the whole quota ahead of now; the key expires when the quota is full
/// again. Returns 0 for allowed, else the milliseconds to wait.
const GCRA: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allowed_at = new_tat - interval * burst
if allowed_at > now then
  return allowed_at - now
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return 0
";

/// An account's known addresses in Redis: a sorted set of address to the
/// last login's time (milliseconds of the Redis server's clock), trimmed
/// to the newest ARGV[3] and to those within ARGV[2] milliseconds, and
/// dropped once its newest is that old.
const REMEMBER_LOGIN: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local known_for = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - known_for)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[1], known_for)
return 0
";

/// 1 when address ARGV[1] logged in to the account within ARGV[2]
/// milliseconds, else 0.
const IS_KNOWN_LOGIN: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at and tonumber(at) > now - tonumber(ARGV[2]) then
  return 1
end
return 0
";

/// Longest a request waits for Redis to count it (it answers in well under
/// a millisecond when up); the connection otherwise retries for seconds.
const SHARED_WAIT: Duration = Duration::from_millis(250);
/// After Redis failed to answer, how long requests skip it (this node's
/// own limits apply meanwhile) before it is tried again.
const SHARED_PAUSE: Duration = Duration::from_secs(2);

/// The quotas of every node, counted in Redis.
struct SharedLimits {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
    remember_login: Script,
    is_known_login: Script,
    /// Until when Redis is skipped, in milliseconds since `started`.
    paused_until_ms: AtomicU64,
    started: Instant,
}

impl SharedLimits {
    fn new(conn: ConnectionManager, prefix: &str) -> Self {
        SharedLimits {
            conn,
            prefix: format!("{prefix}:rl:"),
            script: Script::new(GCRA),
            remember_login: Script::new(REMEMBER_LOGIN),
            is_known_login: Script::new(IS_KNOWN_LOGIN),
            paused_until_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.started.elapsed())
    }

    /// Counts one request against `key`'s quota: `None` when Redis did not
    /// answer in time or is paused after failing (the caller falls back to
    /// this node's own limiter, so limits hold per node while Redis is away).
    async fn check(&self, key: &str, rate: Rate, what: &str) -> Option<ApiResult<()>> {
        let interval = millis(rate.interval());
        let mut invocation = self.script.key(format!("{}{key}", self.prefix));
        invocation.arg(interval.max(1)).arg(rate.count.get());
        match self.run(&invocation).await? {
            0 => Some(Ok(())),
            wait => Some(Err(ApiError::too_many_requests(
                what,
                Duration::from_millis(wait),
            ))),
        }
    }

    async fn remember_login(&self, user_id: i64, address: IpAddr, known_for: Duration) {
        let mut invocation = self.remember_login.key(self.known_logins_key(user_id));
        invocation
            .arg(address.to_string())
            .arg(millis(known_for))
            .arg(KNOWN_LOGINS_PER_ACCOUNT);
        self.run(&invocation).await;
    }

    /// `None` when Redis cannot answer, as for `check`.
    async fn is_known_login(
        &self,
        user_id: i64,
        address: IpAddr,
        known_for: Duration,
    ) -> Option<bool> {
        let mut invocation = self.is_known_login.key(self.known_logins_key(user_id));
        invocation.arg(address.to_string()).arg(millis(known_for));
        Some(self.run(&invocation).await? == 1)
    }

    fn known_logins_key(&self, user_id: i64) -> String {
        format!("{}known:{user_id}", self.prefix)
    }

    /// Runs a script: `None` when Redis did not answer within `SHARED_WAIT`
    /// or is paused after failing (then skipped for `SHARED_PAUSE`).
    async fn run(&self, invocation: &redis::ScriptInvocation<'_>) -> Option<u64> {
        if self.now_ms() < self.paused_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let mut conn = self.conn.clone();
        let answered = invocation.invoke_async::<u64>(&mut conn);
        let failure = match tokio::time::timeout(SHARED_WAIT, answered).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {SHARED_WAIT:?}"),
        };
        let until = self.now_ms() + millis(SHARED_PAUSE);
        // Logged once per pause, not once per request.
        if self.paused_until_ms.swap(until, Ordering::Relaxed) <= self.now_ms() {
            tracing::warn!(%failure, "shared rate limits unavailable; this node's own limits apply");
        }
        None
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// IPv4 addresses count one by one; IPv6 by their /64 network, since one
/// subscriber usually holds a whole /64 and could rotate through it.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
    }
}

/// Names the limit a marker type stands for.
pub trait AddressLimit {
    const ACTION: AddressAction;
}

/// Names the limit a marker type stands for.
pub trait UserLimit {
    const ACTION: UserAction;
}

/// A request from a client address still within the limit `L`. Runs
/// before the body is parsed, so a limited client gets 429 whatever it sends.
pub struct AddressRateLimited<L> {
    /// The client's address, as the limit counted it.
    pub address: IpAddr,
    limit: PhantomData<L>,
}

impl<L: AddressLimit> FromRequestParts<AppState> for AddressRateLimited<L> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| ApiError::internal("the server did not record the client address"))?;
        let limits = &state.rate_limits;
        let address = limits.client_address(peer.ip(), parts);
        limits.check_address(L::ACTION, address).await?;
        Ok(AddressRateLimited {
            address,
            limit: PhantomData,
        })
    }
}

/// An authenticated caller still within the limit `L`: 401 first, then 429,
/// both before the body is parsed.
pub struct RateLimited<L>(pub AuthUser, pub PhantomData<L>);

impl<L: UserLimit> FromRequestParts<AppState> for RateLimited<L> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        state.rate_limits.check_user(L::ACTION, user.id).await?;
        Ok(RateLimited(user, PhantomData))
    }
}

/// Marker types naming each limit, for `RateLimited<limit::Posts>` and the like.
pub mod limit {
    use super::{AddressAction, AddressLimit, UserAction, UserLimit};

    macro_rules! limits {
        ($trait:ident, $action:ident: $($name:ident => $variant:ident),* $(,)?) => {$(
            pub struct $name;
            impl $trait for $name {
                const ACTION: $action = $action::$variant;
            }
        )*};
    }

    limits!(AddressLimit, AddressAction: Registrations => Register, Logins => Login);
    limits!(UserLimit, UserAction:
        Posts => Post,
        Replies => Reply,
        Votes => Vote,
        Follows => Follow,
        RoomMessages => RoomMessage,
        InboxMessages => InboxMessage,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_count_and_period() {
        let rate: Rate = "300/3h".parse().unwrap();
        assert_eq!(rate.count.get(), 300);
        assert_eq!(rate.period, Duration::from_secs(3 * 3600));
        assert_eq!("10/10s".parse::<Rate>().unwrap().to_string(), "10/10s");
    }

    #[test]
    fn malformed_rates_are_rejected() {
        for text in ["", "300", "0/1h", "x/1h", "5/", "5/soon", "10/1ns"] {
            assert!(text.parse::<Rate>().is_err(), "{text}");
        }
    }

    #[test]
    fn ipv6_addresses_share_their_64_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    /// Limits on, with `adjust` applied to the default quotas.
    fn limits_on(adjust: impl FnOnce(&mut crate::config::RateLimitConfig)) -> RateLimits {
        let mut config = crate::Config::for_tests(".".into()).rate_limits;
        config.mode = Switch::On;
        adjust(&mut config);
        RateLimits::new(&config)
    }

    fn is_limited(outcome: ApiResult<()>) -> bool {
        match outcome {
            Ok(()) => false,
            Err(ApiError::TooManyRequests { .. }) => true,
            Err(other) => panic!("expected 429, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_address_that_logged_in_is_neither_counted_nor_refused_by_its_accounts_limit() {
        let limits = limits_on(|config| config.account_logins = "2/1h".parse().unwrap());
        let owner: IpAddr = "192.0.2.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        limits.remember_login(1, owner).await;

        for _ in 0..5 {
            assert!(!is_limited(limits.check_account_login(1, owner).await));
        }
        // The owner's checks left the quota whole for everyone else.
        for expected in [false, false, true] {
            assert_eq!(
                is_limited(limits.check_account_login(1, stranger).await),
                expected
            );
        }
        assert!(!is_limited(limits.check_account_login(1, owner).await));
        // Known to account 1 only.
        for expected in [false, false, true] {
            assert_eq!(
                is_limited(limits.check_account_login(2, owner).await),
                expected
            );
        }
        // An IPv6 address is known by its /64, as it is limited.
        limits
            .remember_login(2, "2001:db8:1:2::1".parse().unwrap())
            .await;
        let neighbour: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        assert!(!is_limited(limits.check_account_login(2, neighbour).await));
    }

    #[tokio::test]
    async fn a_login_is_forgotten_after_its_time() {
        let limits = limits_on(|config| config.account_logins = "1/1h".parse().unwrap())
            .with_known_logins_for(Duration::ZERO);
        let owner: IpAddr = "192.0.2.1".parse().unwrap();
        limits.remember_login(1, owner).await;
        assert!(!is_limited(limits.check_account_login(1, owner).await));
        assert!(is_limited(limits.check_account_login(1, owner).await));
    }

    #[tokio::test]
    async fn a_burst_is_allowed_then_refused_with_a_wait() {
        let limits = limits_on(|config| config.votes = "2/1h".parse().unwrap());
        assert!(limits.check_user(UserAction::Vote, 1).await.is_ok());
        assert!(limits.check_user(UserAction::Vote, 1).await.is_ok());
        match limits.check_user(UserAction::Vote, 1).await {
            Err(ApiError::TooManyRequests {
                retry_after_secs, ..
            }) => assert!((1..=1800).contains(&retry_after_secs), "{retry_after_secs}"),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(
            limits.check_user(UserAction::Vote, 2).await.is_ok(),
            "other users are unaffected"
        );
        assert!(
            limits.check_user(UserAction::Post, 1).await.is_ok(),
            "other actions are unaffected"
        );
    }
}
