import AgentFlowBrowser
import AgentFlowCLI
import AgentFlowCluster
import AgentFlowCore
import AgentFlowMaster
import AgentFlowMesh
import AgentFlowProto
import ArgumentParser
import Foundation
import Logging

/// The dashboard under load: N whole masters (`MasterNode`, each with its HTTP
/// API and feed) in this process, linked by the in-memory transport at
/// `max_peers 3`, publishing log lines and task states at a fixed total rate
/// spread over every origin. Debian's Chromium (headless) shows the first
/// master's page with a remote node's detail open. The page measures its
/// frame intervals (`requestAnimationFrame`), long tasks and the time its
/// WebSocket handler takes per message; the DevTools protocol gives its JS
/// heap and DOM size after a forced GC, sampled through the run.
///
/// In-memory links keep the cluster's cost (no TLS, no syscalls) off the two
/// vCPUs the browser needs; the feed the page reads is the real one.
struct DashboardBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dashboard", abstract: "The dashboard page under many masters' events: frame time and memory.")

    @Option(help: "Masters in the cluster.")
    var masters: Int = 50

    @Option(help: "Events per second, over all masters (log lines; every 20th a task state).")
    var rate: Int = 1_000

    @Option(help: "Seconds of measuring.")
    var seconds: Int = 300

    @Option(help: "Seconds between heap samples.")
    var sampleEvery: Int = 30

    @Option(help: "state.retained_events of every master (events kept per origin for peers that missed them; the shipped default is 4096).")
    var retainedEvents: Int = 4_096

    @Option(help: "Where the page's screenshot goes.")
    var screenshots: String = ".build/dashboard-screenshots"

    func validate() throws {
        guard (2...200).contains(masters) else { throw ValidationError("--masters must be 2…200") }
        guard (1...100_000).contains(rate) else { throw ValidationError("--rate must be 1…100000") }
        guard seconds >= 10, sampleEvery >= 1 else { throw ValidationError("--seconds must be ≥ 10 and --sample-every ≥ 1") }
        guard Chromium.available else { throw ValidationError("needs \(Chromium.browserPath) and \(Chromium.driverPath): apt-get install chromium chromium-driver") }
    }

    func run() async throws {
        let work = FileManager.default.temporaryDirectory.appending(path: "agentflow-dashboard-bench-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        var logger = Logger(label: "bench")
        logger.logLevel = .critical
        let directory = "dashboard-bench-\(getpid())"
        var nodes: [MasterNode] = []
        for index in 1...masters {
            let id = String(format: "m%02d", index)
            let file = work.appending(path: "\(id).yml")
            try Data("""
                role: master
                node: {id: \(id), data_dir: \(work.appending(path: id).path())}
                transport: {kind: memory, listen: "127.0.0.1:\(index)"}
                tls: {mode: "off"}
                discovery: {kind: memory, directory: \(directory)}
                mesh: {max_peers: 3}
                state: {retained_events: \(retainedEvents)}
                monitor: {interval: 1s}
                commands: {allow: [ping]}
                api: {listen: "127.0.0.1:0"}
                """.utf8).write(to: file)
            let config = try ConfigLoader.loadMaster(file: file.path(), environment: [:], registry: AgentFlowModules.standard)
            nodes.append(try MasterNode(config: config, logger: logger))
        }
        let running = nodes.map { node in Task { try await node.run(handleSignals: false) } }
        defer { for task in running { task.cancel() } }
        let address = try await nodes[0].apiAddress()
        print("dashboard benchmark: \(masters) masters in one process (in-memory links, max_peers 3, retained_events \(retainedEvents)), \(rate) events/s over all of them for \(seconds) s; the page of m01 in headless Chromium")

        // The mesh first: every master linked to its preferred peers.
        let formed = ContinuousClock.now
        while nodes.contains(where: { $0.mesh.links().count < 2 }) || nodes[0].cluster.origins().count < masters {
            guard ContinuousClock.now - formed < .seconds(120) else { throw BenchError("the \(masters) masters did not link and learn each other within 120 s") }
            try await Task.sleep(for: .milliseconds(200))
        }
        FileHandle.standardError.write(Data("  mesh formed in \(String(format: "%.1f", (ContinuousClock.now - formed).seconds)) s\n".utf8))

        let browser = try await Chromium(screenshots: URL(filePath: screenshots))
        defer { browser.kill() }
        // Installed before the page's own script: counts feed messages and times their handler.
        try await browser.devtools("Page.addScriptToEvaluateOnNewDocument", ["source": Self.probe])
        try await browser.devtools("Performance.enable")
        try await browser.open("http://\(address.host):\(address.port)/")
        try await browser.waitFor("\(masters) nodes on the page", timeout: .seconds(30),
                                  "return document.querySelectorAll('[data-testid=topology] [data-node]').length === \(masters)")
        let watched = String(format: "m%02d", masters / 2 + 1)
        try await browser.run("document.querySelector('[data-node=\(watched)]').dispatchEvent(new MouseEvent('click', {bubbles: true}))")

        let clusters = nodes.map(\.cluster), rate = rate
        let publisher = Task { try await Self.publish(clusters, rate: rate) }
        defer { publisher.cancel() }
        try await Task.sleep(for: .seconds(5))  // warm: every origin has changed at least once
        try await browser.run("window.__bench.reset()")
        let rssStart = Self.residentBytes()
        var heap: [(second: Int, js: Double, nodes: Double, listeners: Double, rss: Int)] = []
        var durations: [[String: Double]] = []
        let start = ContinuousClock.now
        var next = 0
        while next <= seconds {
            let wait = start + .seconds(next) - ContinuousClock.now
            if wait > .zero { try await Task.sleep(for: wait) }
            try await browser.devtools("HeapProfiler.collectGarbage")
            let metrics = try await browser.devtools("Performance.getMetrics")["metrics"] as? [[String: Any]] ?? []
            func metric(_ name: String) -> Double { metrics.first { $0["name"] as? String == name }?["value"] as? Double ?? .nan }
            heap.append((next, metric("JSHeapUsedSize"), metric("Nodes"), metric("JSEventListeners"), Self.residentBytes()))
            durations.append(["task": metric("TaskDuration"), "layout": metric("LayoutDuration") + metric("RecalcStyleDuration")])
            next += sampleEvery
        }
        let page = try await browser.run("return window.__bench.report()") as? [String: Any] ?? [:]
        _ = try await browser.screenshot("dashboard-50-masters")
        publisher.cancel()
        let published = (try? await publisher.value) ?? 0
        let rssEnd = Self.residentBytes()

        func number(_ key: String) -> Double { (page[key] as? NSNumber)?.doubleValue ?? .nan }
        let spent = { (key: String) in (durations.last?[key] ?? .nan) - (durations.first?[key] ?? .nan) }
        // The forced GCs between samples count as task time too: the busy figure is an upper bound.
        let busyPercent = 100 * spent("task") / Double(seconds)
        let layoutPerFrame = 1_000 * spent("layout") / max(1, number("frames"))
        print("")
        print("| what | value |")
        print("|---|---:|")
        print(String(format: "| frames | %.0f (%.1f/s) |", number("frames"), number("frames") / Double(seconds)))
        print(String(format: "| script work per frame p50 / p95 / p99 / max | %.2f / %.2f / %.2f / %.2f ms |", number("workP50"), number("workP95"), number("workP99"), number("workMax")))
        print(String(format: "| style, layout per frame (mean, DevTools) | %.2f ms |", layoutPerFrame))
        print(String(format: "| frame interval p50 / p95 / p99 / max | %.1f / %.1f / %.1f / %.1f ms |", number("p50"), number("p95"), number("p99"), number("max")))
        print(String(format: "| frames late (interval > 25 ms) | %.0f (%.2f%%) |", number("late"), 100 * number("late") / max(1, number("frames"))))
        print(String(format: "| renderer main thread busy (DevTools TaskDuration) | %.1f%% |", busyPercent))
        print(String(format: "| long tasks (> 50 ms) | %.0f, longest %.0f ms |", number("longTasks"), number("longestTask")))
        print(String(format: "| feed messages | %.0f (%.1f/s), %.1f KiB/s |", number("messages"), number("messages") / Double(seconds), number("bytes") / 1024 / Double(seconds)))
        print(String(format: "| handler per message p50 / p95 / max | %.2f / %.2f / %.2f ms |", number("handlerP50"), number("handlerP95"), number("handlerMax")))
        print(String(format: "| events published | %d (%.0f/s) |", published, Double(published) / (Double(seconds) + 5)))
        print(String(format: "| benchmark process RSS (masters + feed) | %.0f → %.0f MiB |", Double(rssStart) / 1_048_576, Double(rssEnd) / 1_048_576))
        print("")
        print("| second | page: JS heap after GC | page: DOM nodes | page: listeners | masters' process RSS |")
        print("|---:|---:|---:|---:|---:|")
        for sample in heap {
            print(String(format: "| %d | %.2f MiB | %.0f | %.0f | %.0f MiB |", sample.second, sample.js / 1_048_576, sample.nodes, sample.listeners, Double(sample.rss) / 1_048_576))
        }
        if let first = heap.first, let last = heap.last, heap.count > 2 {
            let later = heap.dropFirst(heap.count / 2).map(\.js)
            print(String(format: "JS heap: first %.2f MiB, last %.2f MiB, max %.2f MiB; second half min–max %.2f–%.2f MiB",
                         first.js / 1_048_576, last.js / 1_048_576, (heap.map(\.js).max() ?? 0) / 1_048_576,
                         (later.min() ?? 0) / 1_048_576, (later.max() ?? 0) / 1_048_576))
        }
        for node in nodes { node.mesh.shutdown() }
    }

    /// Publishes `rate` events/s, round robin over the masters: log lines, and
    /// on every 20th a task's state. Returns how many it published.
    static func publish(_ clusters: [ClusterNode], rate: Int) async throws -> Int {
        let interval = Duration.seconds(1) / rate
        var next = ContinuousClock.now
        var count = 0
        var line = Agentflow_Mesh_V1_TaskLog()
        line.task = "worker"
        let states: [Agentflow_Mesh_V1_TaskState] = [.running, .exited, .failed, .running]
        while !Task.isCancelled {
            // Catch up in small batches when a sleep overshoots, so the rate holds.
            while next <= ContinuousClock.now {
                let cluster = clusters[count % clusters.count]
                if count % 20 == 19 {
                    var status = Agentflow_Mesh_V1_TaskStatus()
                    status.task = "worker"
                    status.state = states[(count / 20) % states.count]
                    status.message = "round \(count / 20)"
                    cluster.publish(.taskStatus(status))
                } else {
                    line.text = "event \(count): " + String(repeating: "x", count: 80)
                    cluster.publish(.taskLog(line))
                }
                count += 1
                next += interval
            }
            do { try await Task.sleep(until: next, clock: .continuous) } catch { break }
        }
        return count
    }

    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = text.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The page-side probe: frame intervals from requestAnimationFrame, long
    /// tasks, and per feed message its size and how long its handler ran
    /// (JSON parse, model update, React's state change; rendering shows in
    /// the frame intervals).
    static let probe = """
        (() => {
          // Histograms in fixed typed arrays, so the probe itself adds nothing to the heap it measures.
          // frames: rAF intervals (0.1 ms bins); work: script time of the page's tasks between two frames (0.01 ms bins);
          // handler: the feed's message handler alone (0.01 ms bins).
          const frames = new Uint32Array(20001), work = new Uint32Array(20001), handler = new Uint32Array(20001);
          const s = { messages: 0, bytes: 0, longTasks: 0, longestTask: 0, last: 0, frameMax: 0, handlerMax: 0, pending: 0, workMax: 0 };
          const add = (h, scale, v) => { h[Math.min(h.length - 1, Math.round(v * scale))]++; };
          const frame = (t) => {
            if (s.last) { const d = t - s.last; add(frames, 10, d); s.frameMax = Math.max(s.frameMax, d); }
            add(work, 100, s.pending); s.workMax = Math.max(s.workMax, s.pending); s.pending = 0;
            s.last = t; requestAnimationFrame(frame);
          };
          // React renders in tasks its scheduler posts through a MessageChannel: time those too.
          const NativeChannel = window.MessageChannel;
          const portSetter = Object.getOwnPropertyDescriptor(MessagePort.prototype, 'onmessage').set;
          const timePort = (port) => {
            let current = null;
            Object.defineProperty(port, 'onmessage', {
              get: () => current,
              set: (h) => {
                current = h;
                portSetter.call(port, h && ((event) => { const t0 = performance.now(); h.call(port, event); s.pending += performance.now() - t0; }));
              },
            });
          };
          window.MessageChannel = function () { const channel = new NativeChannel(); timePort(channel.port1); timePort(channel.port2); return channel; };
          requestAnimationFrame(frame);
          try {
            new PerformanceObserver((list) => { for (const e of list.getEntries()) { s.longTasks++; s.longestTask = Math.max(s.longestTask, e.duration); } })
              .observe({ type: 'longtask', buffered: false });
          } catch (e) {}
          const Native = window.WebSocket;
          const nativeSetter = Object.getOwnPropertyDescriptor(Native.prototype, 'onmessage').set;
          window.WebSocket = function (url, protocols) {
            const socket = protocols === undefined ? new Native(url) : new Native(url, protocols);
            let current = null;
            Object.defineProperty(socket, 'onmessage', {
              get: () => current,
              set: (h) => {
                current = h;
                nativeSetter.call(socket, h && ((event) => {
                  const t0 = performance.now();
                  h.call(socket, event);
                  const d = performance.now() - t0;
                  add(handler, 100, d); s.handlerMax = Math.max(s.handlerMax, d); s.pending += d;
                  s.messages++; s.bytes += event.data.length;
                }));
              },
            });
            return socket;
          };
          window.WebSocket.prototype = Native.prototype;
          const count = (h) => h.reduce((a, b) => a + b, 0);
          const pct = (h, scale, p) => {
            const n = count(h); let seen = 0;
            for (let i = 0; i < h.length; i++) { seen += h[i]; if (seen > n * p) return i / scale; }
            return 0;
          };
          window.__bench = {
            reset() { frames.fill(0); work.fill(0); handler.fill(0); Object.assign(s, { messages: 0, bytes: 0, longTasks: 0, longestTask: 0, frameMax: 0, handlerMax: 0, workMax: 0 }); },
            report() {
              // Late: an interval of more than one and a half vsyncs, so a frame was skipped.
              let late = 0; for (let i = 251; i < frames.length; i++) late += frames[i];
              return { frames: count(frames), p50: pct(frames, 10, 0.5), p95: pct(frames, 10, 0.95), p99: pct(frames, 10, 0.99), max: s.frameMax, late,
                workP50: pct(work, 100, 0.5), workP95: pct(work, 100, 0.95), workP99: pct(work, 100, 0.99), workMax: s.workMax,
                longTasks: s.longTasks, longestTask: s.longestTask, messages: s.messages, bytes: s.bytes,
                handlerP50: pct(handler, 100, 0.5), handlerP95: pct(handler, 100, 0.95), handlerMax: s.handlerMax };
            },
          };
        })();
        """
}
