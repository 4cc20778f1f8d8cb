//! The server binary as operators run it: `mirage check`, `mirage backup`
//! SIGKILL crash rounds and many connections at once, each against a child
//! process on port 0.

mod backup;
mod check;
mod connections;
mod crash;
mod process;
