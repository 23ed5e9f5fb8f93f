import AgentFlowDiscovery
public import Foundation

/// Debian's Chromium, headless, driven through its chromedriver with the W3C
/// WebDriver protocol (the protocol selenium speaks, here over plain HTTP from
/// Swift, so one test holds the masters, the browser and the asserts), plus
/// the DevTools protocol through chromedriver's `goog/cdp/execute`.
///
/// AgentFlow's dashboard tests and `agentflow-bench dashboard` drive the
/// page with it; a distribution that changes the page can do the same.
public final class Chromium: @unchecked Sendable {
    public static let driverPath = "/usr/bin/chromedriver"
    public static let browserPath = "/usr/bin/chromium"
    public static var available: Bool { FileManager.default.isExecutableFile(atPath: driverPath) && FileManager.default.isExecutableFile(atPath: browserPath) }

    private let driver: Process
    private let base: String
    private let session: String
    private let http = CurlHTTPClient()
    /// The browser's profile, also how `kill` finds its processes.
    private let userDataDir = FileManager.default.temporaryDirectory.appending(path: "agentflow-chromium-\(UUID().uuidString.prefix(8))").path()
    /// Where screenshots go: kept as CI artifacts.
    public let screenshots: URL

    /// Starts chromedriver and a headless Chromium session; screenshots go to `screenshots`.
    public init(screenshots: URL) async throws {
        self.screenshots = screenshots
        let port = try Self.freePort()
        driver = Process()
        // Foundation starts it as the leader of a process group of its own, which the
        // Chromium it starts joins: `kill` ends them all at once.
        driver.executableURL = URL(filePath: Self.driverPath)
        driver.arguments = ["--port=\(port)", "--allowed-ips=127.0.0.1"]
        driver.standardOutput = FileHandle.nullDevice
        driver.standardError = FileHandle.nullDevice
        try driver.run()
        base = "http://127.0.0.1:\(port)"
        let http = self.http
        let base = self.base
        try await Self.eventually("chromedriver to answer", timeout: .seconds(15)) {
            (try? await http.request("GET", base + "/status", timeoutMilliseconds: 1_000))?.status == 200
        }
        let capabilities: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": [
                "binary": Self.browserPath,
                "args": ["--user-data-dir=\(userDataDir)", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000", "--no-first-run"],
            ],
        ]]]
        let answer = try await Self.call(http, "POST", base + "/session", capabilities, timeout: 60_000)
        guard let id = (answer as? [String: Any])?["sessionId"] as? String else { throw BrowserError("chromedriver made no session: \(answer)") }
        session = id
    }

    /// Ends chromedriver and the Chromium it started: its whole process group.
    public func kill() {
        Foundation.kill(-driver.processIdentifier, SIGKILL)
        driver.waitUntilExit()
        try? FileManager.default.removeItem(atPath: userDataDir)
    }

    public func open(_ url: String) async throws {
        _ = try await Self.call(http, "POST", base + "/session/\(session)/url", ["url": url], timeout: 30_000)
    }

    /// Runs `script` in the page (a function body; `arguments` holds `args`) and returns its value.
    @discardableResult
    public func run(_ script: String, _ args: [Any] = []) async throws -> Any {
        try await Self.call(http, "POST", base + "/session/\(session)/execute/sync", ["script": script, "args": args], timeout: 30_000)
    }

    /// Runs an async script: the last argument is the callback that gives its value.
    public func runAsync(_ script: String, _ args: [Any] = [], timeout: Int = 60_000) async throws -> Any {
        try await Self.call(http, "POST", base + "/session/\(session)/execute/async", ["script": script, "args": args], timeout: timeout)
    }

    public func screenshot(_ name: String) async throws -> URL {
        let value = try await Self.call(http, "GET", base + "/session/\(session)/screenshot", nil, timeout: 30_000)
        guard let text = value as? String, let png = Data(base64Encoded: text) else { throw BrowserError("chromedriver sent no screenshot") }
        try FileManager.default.createDirectory(at: screenshots, withIntermediateDirectories: true)
        let file = screenshots.appending(path: "\(name).png")
        try png.write(to: file)
        return file
    }

    /// Polls `script` (returning a boolean) until it is true.
    public func waitFor(_ what: String, timeout: Duration = .seconds(10), _ script: String, _ args: [String] = []) async throws {
        try await Self.eventually(what, timeout: timeout) { [self] in (try? await run(script, args)) as? Bool == true } describe: { [self] in
            let page = try? await run("""
                return (document.querySelector('[data-testid=connection]')?.textContent ?? 'no header') + '; nodes '
                  + [...document.querySelectorAll('[data-testid=topology] [data-node]')].map(n => n.dataset.node + ':' + n.dataset.health).join(',')
                  + '; edges ' + [...document.querySelectorAll('[data-edge]')].map(e => e.dataset.edge).join(',') + '; ' + location.href
                """)
            return "the page: \(page.map { "\($0)" } ?? "no answer")"
        }
    }

    /// Runs a DevTools protocol command (`Performance.getMetrics`, `HeapProfiler.collectGarbage`, …) and returns its result.
    @discardableResult
    public func devtools(_ command: String, _ parameters: [String: Any] = [:]) async throws -> [String: Any] {
        let value = try await Self.call(http, "POST", base + "/session/\(session)/goog/cdp/execute", ["cmd": command, "params": parameters], timeout: 60_000)
        return value as? [String: Any] ?? [:]
    }

    /// Polls `condition` until true or `timeout`; fails with `describe()` (the state seen last).
    static func eventually(_ what: String, timeout: Duration, every interval: Duration = .milliseconds(150),
                           _ condition: @escaping @Sendable () async throws -> Bool,
                           describe: @escaping @Sendable () async -> String = { "" }) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if (try? await condition()) == true { return }
            try await Task.sleep(for: interval)
        }
        throw BrowserError("timed out after \(timeout) waiting for \(what). Last seen: \(await describe())")
    }

    /// A loopback port nothing listens on now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BrowserError("no socket for a free port: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw BrowserError("no free loopback port: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func call(_ http: CurlHTTPClient, _ method: String, _ url: String, _ body: [String: Any]?, timeout: Int) async throws -> Any {
        let data = try body.map { try JSONSerialization.data(withJSONObject: $0) }
        let response = try await http.request(method, url, headers: ["Content-Type: application/json"], body: data.map { Array($0) } ?? (method == "POST" ? Array("{}".utf8) : nil),
                                              timeoutMilliseconds: timeout, maxBodyBytes: 64 << 20)
        let json = try JSONSerialization.jsonObject(with: Data(response.body), options: [.fragmentsAllowed]) as? [String: Any]
        let value = json?["value"] as Any
        if response.status != 200 {
            throw BrowserError("WebDriver \(method) \(url.split(separator: "/").suffix(2).joined(separator: "/")): HTTP \(response.status): \((value as? [String: Any])?["message"] ?? value)")
        }
        return value
    }
}

public struct BrowserError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
