//! Work spread over every core, for CPU-bound maps (opening sealed records,
//! decoding body chunks).

/// `f` over `items`, in order, on every core (scoped threads), when each
/// thread gets at least `min_per_thread` items; on the calling thread
/// otherwise. A panic in `f` is resumed on the caller.
pub(crate) fn par_map<T: Send, R: Send>(
    items: Vec<T>,
    min_per_thread: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let min_per_thread = min_per_thread.max(1);
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    if items.len() < 2 * min_per_thread || threads < 2 {
        return items.into_iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads).max(min_per_thread);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(chunk).collect());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}
