#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Gives back the code pages a long-running process touched only while it
/// started.
///
/// Why: Linux maps a file-backed page together with its cached neighbours
/// (fault-around, 64 KiB), so the start-up of a 25 MB binary leaves nearly all
/// of its code resident, though a settled master touches about 5 MB of pages
/// in any few seconds (measured with clear_refs; docs/benchmarks.md). Those
/// pages are clean copies of the binary and its libraries: `MADV_PAGEOUT`
/// drops them at once, as the kernel would under memory pressure, and any that
/// are needed again come back from the page cache or the file.
///
/// Only read-only, file-backed mappings are advised; writable and anonymous
/// memory is never touched.
enum StartupPages {
    /// `MADV_PAGEOUT` (Linux 5.4+), not in older Glibc headers.
    static let pageOut: Int32 = 21

    /// Advises every read-only file mapping of this process out; returns how many bytes were advised.
    @discardableResult
    static func release() -> Int {
        #if os(Linux)
        guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return 0 }
        var advised = 0
        for line in maps.split(separator: "\n") {
            // start-end perms offset dev inode path
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[1].hasPrefix("r"), !fields[1].contains("w"), fields[5].hasPrefix("/"),
                  !fields[5].hasPrefix("/dev/"), !fields[5].hasPrefix("/memfd") else { continue }
            let bounds = fields[0].split(separator: "-")
            guard bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16), end > start,
                  let pointer = UnsafeMutableRawPointer(bitPattern: start) else { continue }
            if madvise(pointer, Int(end - start), pageOut) == 0 { advised += Int(end - start) }
        }
        return advised
        #else
        return 0
        #endif
    }

    /// Waits `delay` (start-up done), then releases; returns early when cancelled.
    static func release(after delay: Duration) async {
        do {
            try await Task.sleep(for: delay)
        } catch {
            return
        }
        release()
    }
}

extension StartupPages {
    /// Runs `body` (a process's whole life) and, beside it, releases start-up
    /// pages once `delay` has passed; the release task ends with `body`.
    static func running<T: Sendable>(releasingAfter delay: Duration = .seconds(30), _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { await release(after: delay); return nil }
            group.addTask { try await body() }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let value = next { return value }
            }
            preconditionFailure("the body always returns a value")
        }
    }
}
