/// Collects every value a decode read, with its effective value and source, so
/// `agentflow config check` can print the effective config without each type
/// writing its own printer.
final class ConfigRecorder {
    struct Entry {
        var path: ConfigPath
        var text: String
        var source: ConfigSource
    }

    private(set) var entries: [Entry] = []

    func record(_ path: ConfigPath, text: String, source: ConfigSource) {
        entries.append(Entry(path: path, text: text, source: source))
    }
}

@available(*, unavailable)
extension ConfigRecorder: Sendable {}
