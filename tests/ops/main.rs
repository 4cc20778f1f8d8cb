//! The server binary as operators run it: `mirage check`, `mirage backup`
//! and SIGKILL crash rounds, each against a child process on port 0.

mod backup;
mod check;
mod crash;
mod process;
