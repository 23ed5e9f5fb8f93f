/// Turns the values a decode recorded back into YAML, each line annotated
/// with where its value came from (`# default`, `# env AGENTFLOW_…`, `# file:line`).
enum EffectiveConfigRenderer {
    private final class Tree {
        var children: [(component: ConfigPath.Component, tree: Tree)] = []
        var leaf: (text: String, source: ConfigSource)?

        func child(_ component: ConfigPath.Component) -> Tree {
            if let existing = children.first(where: { $0.component == component }) { return existing.tree }
            let tree = Tree()
            children.append((component, tree))
            return tree
        }
    }

    static func render(_ entries: [ConfigRecorder.Entry]) -> String {
        let root = Tree()
        for entry in entries {
            var node = root
            for component in entry.path.components { node = node.child(component) }
            node.leaf = (entry.text, entry.source)
        }
        var lines: [String] = []
        emit(root, indent: 0, into: &lines)
        return lines.joined(separator: "\n") + "\n"
    }

    private static func emit(_ tree: Tree, indent: Int, into lines: inout [String]) {
        let pad = String(repeating: " ", count: indent)
        for (component, child) in tree.children {
            switch component {
            case .key(let key):
                if let leaf = child.leaf {
                    lines.append("\(pad)\(key): \(leaf.text)\(comment(leaf.source))")
                } else {
                    lines.append("\(pad)\(key):")
                    emit(child, indent: indent + 2, into: &lines)
                }
            case .index:
                // A list item: emit its mapping with the first line prefixed by "- ".
                var itemLines: [String] = []
                emit(child, indent: 0, into: &itemLines)
                for (offset, line) in itemLines.enumerated() {
                    lines.append(pad + (offset == 0 ? "- " : "  ") + line)
                }
            }
        }
    }

    private static func comment(_ source: ConfigSource) -> String {
        switch source {
        case .builtInDefault: "  # default"
        case .environment(let variable): "  # env \(variable)"
        case .file(let path, let line, _): "  # \(path):\(line)"
        }
    }
}
