//! Domain rules as plain functions: validation, hashtags, the feed mix, time.

pub mod account;
pub mod feed;
pub mod hashtags;
pub mod time;
pub mod trending;
pub mod validate;
