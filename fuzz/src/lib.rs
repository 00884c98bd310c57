//! Shared code of the Missive fuzz targets.
//!
//! Each target in `fuzz_targets/` is one line calling a `run` function
//! here, so that the corpus generator (`examples/gen_corpus.rs`) and the
//! tests of this crate can use exactly the same input formats and checks.
//!
//! Input formats are read with [`arbitrary::Unstructured`]. The targets whose
//! seeds are written by the generator (`frame_decoder`, `server_inputs`,
//! `client_inputs`) use a small explicit byte format (see [`codec`]) with a
//! matching writer, so a recorded session can be turned into a seed exactly.

pub mod client;
pub mod codec;
#[cfg(fuzzing)]
pub mod differential;
pub mod envelope;
pub mod fixtures;
pub mod frames;
pub mod packets;
pub mod server;
