/// Checks `done` every `everyMs` until it holds or `ms` have passed; true if it held.
func pollUntil(ms: Int, everyMs: Int, _ done: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(ms)
    while !(await done()) {
        guard ContinuousClock.now < deadline else { return false }
        try? await Task.sleep(for: .milliseconds(everyMs))
    }
    return true
}
