/// Path arithmetic on plain strings: what `NSString`'s path methods did, so
/// code that needs no more than FoundationEssentials does not pull in the
/// rest of Foundation for two string operations.
public enum PathText {
    /// `name` inside `directory` (`name` itself when it is absolute).
    ///
    /// ```swift
    /// PathText.join("./agentflow-data", "peer-book.json")   // "./agentflow-data/peer-book.json"
    /// ```
    public static func join(_ directory: String, _ name: String) -> String {
        if name.hasPrefix("/") || directory.isEmpty { return name }
        return directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    /// The folder that holds `path`: "" for a bare name, "/" for a file in the root.
    public static func parent(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "" }
        if slash == trimmed.startIndex { return "/" }
        return String(trimmed[..<slash])
    }
}

extension Double {
    /// The value with `places` digits after the point (`3.14159.fixed(2)` is
    /// "3.14"), without Foundation's `String(format:)`.
    public func fixed(_ places: Int) -> String {
        guard isFinite else { return description }
        var scale = 1.0
        for _ in 0..<max(0, places) { scale *= 10 }
        let scaled = (abs(self) * scale).rounded()
        guard scaled < 9e15 else { return description }
        let units = UInt64(scaled)
        let whole = units / UInt64(scale)
        let fraction = units % UInt64(scale)
        var text = (self < 0 && units > 0 ? "-" : "") + String(whole)
        if places > 0 {
            let digits = String(fraction)
            text += "." + String(repeating: "0", count: places - digits.count) + digits
        }
        return text
    }
}

extension UInt8 {
    /// Two lowercase hex digits.
    public var hexByte: String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(self >> 4)], digits[Int(self & 0xF)]])
    }
}

extension String {
    /// Without leading and trailing spaces and tabs (`trimmingCharacters(in: .whitespaces)` without Foundation).
    public var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }

    /// Padded with spaces on the right to `width` characters (never cut).
    public func padded(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}

extension StringProtocol {
    /// Without leading and trailing whitespace and newlines (`"\r\n"` is one Character, so test the property).
    public var trimmingWhitespace: String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
