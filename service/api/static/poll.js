// Repeats an async task: the next run starts a fixed delay after the previous one ends, so a
// slow answer never piles requests up.

/** Runs `task` now and every `ms` after; returns a function that stops it. */
export function poll(task, ms, onError) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    try {
      const again = await task();
      if (again === false) stopped = true;
    } catch (error) {
      if (onError) onError(error);
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
