//! Storage for the wake loop, async; [`Blocking`] runs any blocking storage in it.

use core::future::Future;

use crate::storage::{CounterStore, Persisted, StorageFailure, StorageOp, UpdateStorage};

/// The state machine's storage operations, async, and the link's counter.
pub trait Storage {
    /// The storage's error.
    type Error: core::fmt::Debug;
    /// What is persisted (see [`UpdateStorage::load`]).
    fn load(&mut self) -> impl Future<Output = Result<Persisted, Self::Error>>;
    /// Carries out one operation.
    fn apply(&mut self, op: StorageOp<'_>) -> impl Future<Output = Result<(), Self::Error>>;
    /// See [`CounterStore::load_counter`].
    fn load_counter(&mut self) -> impl Future<Output = Result<u64, Self::Error>>;
    /// See [`CounterStore::store_counter`].
    fn store_counter(&mut self, value: u64) -> impl Future<Output = Result<(), Self::Error>>;
    /// What an error means to the state machine (see [`UpdateStorage::failure`]); by default
    /// [`StorageFailure::Io`], which ends the wake.
    fn failure(_error: &Self::Error) -> StorageFailure {
        StorageFailure::Io
    }
}

/// A blocking [`UpdateStorage`] + [`CounterStore`] in the async loop: each operation runs to
/// completion when polled.
pub struct Blocking<'a, S>(pub &'a mut S);

impl<S> Storage for Blocking<'_, S>
where
    S: UpdateStorage + CounterStore<Error = <S as UpdateStorage>::Error>,
{
    type Error = <S as UpdateStorage>::Error;

    async fn load(&mut self) -> Result<Persisted, Self::Error> {
        self.0.load()
    }

    async fn apply(&mut self, op: StorageOp<'_>) -> Result<(), Self::Error> {
        self.0.apply(op)
    }

    async fn load_counter(&mut self) -> Result<u64, Self::Error> {
        self.0.load_counter()
    }

    async fn store_counter(&mut self, value: u64) -> Result<(), Self::Error> {
        self.0.store_counter(value)
    }

    fn failure(error: &Self::Error) -> StorageFailure {
        S::failure(error)
    }
}
