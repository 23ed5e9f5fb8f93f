import AgentFlowBrowser
import AgentFlowCore
import AgentFlowMesh
import Foundation
import Testing

/// The dashboard in a real headless Chromium against real master processes.
/// Screenshots land in .build/dashboard-screenshots (CI keeps them).
@Suite("Dashboard in Chromium (real processes)", .serialized, .enabled(if: Chromium.available, "needs Debian's chromium and chromium-driver"))
struct DashboardBrowserTests {
    /// Kept as CI artifacts; docs/images/dashboard.png is one of them.
    static let screenshots = URL(filePath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appending(path: ".build/dashboard-screenshots")

    static func url(_ cluster: ClusterHarness, _ node: String, fragment: String = "") throws -> String {
        "http://127.0.0.1:\(try cluster.ports(of: node).api)/\(fragment)"
    }

    static let countNodes = "return document.querySelectorAll('[data-testid=topology] [data-node]').length"
    static let edgeLabels = "return [...document.querySelectorAll('[data-edge]')].map(e => e.dataset.edge + ' ' + e.querySelector('.edge-label').textContent).sort()"

    @Test("3 masters: the graph; a log line and a task from m3 (latency printed, the plan's 500 ms asserted); a killed master turning down, and a restart of the page's master resynced without a reload")
    func fullMesh() async throws {
        let cluster = try ClusterHarness(transport: "tcp")
        defer { cluster.stop() }
        let nodes = ["m1", "m2", "m3"]
        try await cluster.startMesh(nodes, discovery: .staticPeers([]))
        let browser = try await Chromium(screenshots: Self.screenshots)
        defer { browser.kill() }
        try await browser.open(try Self.url(cluster, "m1"))

        // 3 nodes, 3 edges, each labelled with its transport.
        try await browser.waitFor("3 nodes and 3 edges", """
            return document.querySelectorAll('[data-testid=topology] [data-node]').length === 3 && document.querySelectorAll('[data-edge]').length === 3
              && [...document.querySelectorAll('.edge-label')].every(l => l.textContent.startsWith('tcp'))
            """)
        let labels = try await browser.run(Self.edgeLabels) as? [String] ?? []
        #expect(labels.count == 3 && labels.allSatisfy { $0.contains(" tcp") }, "edges: \(labels)")
        #expect(try await browser.run("return document.querySelector('[data-testid=topology] [data-node=m1]').getAttribute('aria-label')") as? String ?? "" == "m1 (this master): up, 0 alert(s), this master")

        // Latency: the publish call on m3 to the line in m1's page (a MutationObserver's timestamp on the same clock).
        try await browser.run("document.querySelector('[data-testid=topology] [data-node=m3]').dispatchEvent(new MouseEvent('click', {bubbles: true}))")
        try await browser.waitFor("m3's detail", "return document.querySelector('[data-testid=node-detail]').dataset.node === 'm3'")
        try await browser.run("""
            window.__seen = {};
            const log = document.querySelector('[data-testid=log]');
            new MutationObserver(() => {
              const at = performance.timeOrigin + performance.now();
              for (const line of log.children) {
                const m = /probe-(\\d+)$/.exec(line.textContent);
                if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = at;
              }
            }).observe(log, {childList: true, subtree: true, characterData: true});
            """)
        var published: [Int: Double] = [:]
        for i in 0..<200 {
            published[i] = Date().timeIntervalSince1970 * 1_000
            let answer = try await cluster.post("m3", "/api/publish/logs", ["task": "probe", "lines": ["probe-\(i)"]])
            #expect(answer.status == 202)
            try await Task.sleep(for: .milliseconds(20))
        }
        try await browser.waitFor("all 200 lines in m1's page", "return Object.keys(window.__seen).length === 200")
        let seen = try await browser.run("return window.__seen") as? [String: Double] ?? [:]
        let latencies = published.compactMap { i, at in seen[String(i)].map { $0 - at } }.sorted()
        let p50 = latencies[latencies.count / 2], p99 = latencies[latencies.count * 99 / 100 - 1], worst = latencies.last!
        print("dashboard latency (publish on m3 → DOM in m1's page, 200 lines, 20 ms apart): p50 \(String(format: "%.1f", p50)) ms, p99 \(String(format: "%.1f", p99)) ms, max \(String(format: "%.1f", worst)) ms")
        #expect(latencies.count == 200)
        #expect(p99 < 500, "the plan asks for under 500 ms; p99 was \(p99) ms")

        try await cluster.post("m3", "/api/publish/task_status", ["task": "web", "state": "running", "message": "serving"])
        try await browser.waitFor("m3's task in m1's page", "const row = document.querySelector('[data-task=web]'); return !!row && row.textContent.includes('running')")
        _ = try await browser.screenshot("full-mesh")

        // Kill m3: it turns down within mesh.peer_timeout (3 s here), and its edges go.
        let killed = ContinuousClock.now
        cluster.signal("m3", SIGKILL)
        try await browser.waitFor("m3 down and its edges gone", timeout: .seconds(3), """
            return document.querySelector('[data-testid=topology] [data-node=m3]')?.dataset.health === 'down'
              && ![...document.querySelectorAll('[data-edge]')].some(e => e.dataset.edge.includes('m3'))
            """)
        print("dashboard: the killed m3 turned down after \(ContinuousClock.now - killed)")
        _ = try await browser.screenshot("m3-killed")

        // Restart the page's own master: the page says it is stale, reconnects and resyncs, with no reload.
        try await browser.run("window.__page = 'still here'")
        cluster.signal("m1", SIGTERM)
        try await browser.waitFor("the stale banner", "return !!document.querySelector('[data-testid=stale]')")
        try await Task.sleep(for: .seconds(1))
        try cluster.startMaster("m1")
        try await browser.waitFor("live again with m2", timeout: .seconds(20), """
            return window.__page === 'still here' && document.querySelector('[data-testid=connection]').textContent === 'live'
              && !document.querySelector('[data-testid=stale]') && document.querySelector('[data-testid=topology] [data-node=m2]')?.dataset.health === 'up'
            """)
    }

    @Test("6 masters at max_peers 2: relayed paths are drawn; ping and task.restart reach a non-neighbour from the console with their path; refused and unknown targets say so; the feed's command journal shows receipts and results, and a command another master sent")
    func partialMeshConsole() async throws {
        let cluster = try ClusterHarness(transport: "grpc")
        defer { cluster.stop() }
        let nodes = (1...6).map { "m\($0)" }
        let extra = """
            tasks:
              - name: worker
                command: [/bin/sh, -c, "echo worker up; exec sleep 300"]
            commands:
              allow: [ping, task.restart]
            """
        for node in nodes {
            try cluster.startMaster(node, discovery: .staticPeers(node == "m1" ? [] : ["m1"]), maxPeers: 2, extra: extra)
        }
        try await cluster.waitForPreferredPeers(nodes, maxPeers: 2)
        let browser = try await Chromium(screenshots: Self.screenshots)
        defer { browser.kill() }
        try await browser.open(try Self.url(cluster, "m1"))
        try await browser.waitFor("6 nodes, 6 ring edges and relayed paths", timeout: .seconds(15), """
            return document.querySelectorAll('[data-testid=topology] [data-node]').length === 6 && document.querySelectorAll('[data-edge]').length === 6
              && document.querySelectorAll('[data-relayed]').length >= 1
            """)
        let relayed = try #require(try await browser.run("return document.querySelector('[data-relayed]').dataset.relayed") as? String)
        _ = try await browser.screenshot("partial-mesh")

        func command(_ target: String, _ action: String, _ args: String = "") async throws -> String {
            let before = try await browser.run("return Number(document.querySelector('[data-testid=command-result]')?.dataset.attempt ?? 0)") as? Int ?? 0
            try await browser.run("""
                const set = (id, value) => {
                  const el = document.getElementById(id);
                  const proto = el.tagName === 'TEXTAREA' ? HTMLTextAreaElement.prototype : HTMLInputElement.prototype;
                  Object.getOwnPropertyDescriptor(proto, 'value').set.call(el, value);
                  el.dispatchEvent(new Event('input', {bubbles: true}));
                };
                set('cmd-target', arguments[0]); set('cmd-action', arguments[1]); set('cmd-args', arguments[2]);
                """, [target, action, args])
            try await browser.run("document.querySelector('[data-testid=console] button[type=submit]').click()")
            try await browser.waitFor("the result of \(action) on \(target)", timeout: .seconds(15),
                                      "return Number(document.querySelector('[data-testid=command-result]')?.dataset.attempt ?? 0) === \(before + 1)")
            return try await browser.run("return document.querySelector('[data-testid=command-result]').textContent") as? String ?? ""
        }
        let ping = try await command(relayed, "ping")
        #expect(ping.contains("ok from \(relayed)") && ping.contains("pong from \(relayed)") && ping.contains("path: via "), "\(ping)")
        let restart = try await command(relayed, "task.restart", "task=worker")
        #expect(restart.contains("ok from \(relayed)"), "\(restart)")
        let refused = try await command(relayed, "status")
        #expect(refused.contains("refused the command") && refused.contains("[refused]"), "\(refused)")
        let unknown = try await command("m99", "ping")
        #expect(unknown.contains("No master by that id is known here") && unknown.contains("[unknown_target]"), "\(unknown)")
        let badArgs = try await command(relayed, "task.restart", "no-equals-sign")
        #expect(badArgs.contains("key=value"), "\(badArgs)")

        // The feed's command journal: what m1 issued, with receipt and result, and a command another master sent to m1.
        try await browser.waitFor("the issued commands in the journal", timeout: .seconds(5), """
            const rows = [...document.querySelectorAll('[data-testid=commands] [data-role=issued]')].map(r => r.dataset.status);
            return rows.filter(s => s === 'ok').length === 2 && rows.includes('refused');
            """)
        let issued = try await browser.run("return document.querySelector('[data-testid=commands] [data-role=issued][data-status=ok]').textContent") as? String ?? ""
        #expect(issued.contains("→ \(relayed)") && issued.contains("receipt after"), "\(issued)")
        let far = try #require(nodes.last { $0 != relayed && $0 != "m1" })
        let sent = try await cluster.post(far, "/api/commands", ["target": "m1", "action": "ping"])
        #expect(sent.status == 200, "\(sent)")
        try await browser.waitFor("a ping from \(far) in m1's journal", timeout: .seconds(5), """
            return [...document.querySelectorAll('[data-testid=commands] [data-role=ran]')].some(r => r.dataset.status === 'ok' && r.textContent.includes('← \(far) ping'))
            """)
        _ = try await browser.screenshot("console")
    }

    @Test("with api.token set, a page without it gets nothing and asks for it; the feed refuses a foreign Origin and bad messages, and a resync request gets a snapshot")
    func tokenAndFeedRules() async throws {
        let cluster = try ClusterHarness(transport: "tcp")
        defer { cluster.stop() }
        try cluster.startMaster("m1", discovery: .staticPeers([]), apiToken: "s3cret-token")
        let browser = try await Chromium(screenshots: Self.screenshots)
        defer { browser.kill() }
        try await browser.open(try Self.url(cluster, "m1"))
        try await browser.waitFor("the token form", "return document.querySelector('[data-testid=connection]').textContent === 'unauthorized' && !!document.getElementById('token')")
        #expect(try await browser.run(Self.countNodes) as? Int == 0)
        let upgrade = ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
        // Refused upgrades first: each closes its connection, so the next is a new one (as a browser's WebSocket is).
        #expect(try await cluster.raw("m1", "GET", "/api/ws", headers: upgrade).status == 400)
        #expect(try await cluster.raw("m1", "GET", "/api/ws?access_token=s3cret-token", headers: upgrade + ["Origin: http://evil.example"]).status == 400)
        // The same without the upgrade says why.
        #expect(try await cluster.raw("m1", "GET", "/api/ws").status == 401)
        #expect(try await cluster.raw("m1", "GET", "/api/ws?access_token=s3cret-token", headers: ["Origin: http://evil.example"]).status == 403)

        try await browser.open(try Self.url(cluster, "m1", fragment: "#token=s3cret-token"))
        try await browser.waitFor("the page with the token", "return document.querySelector('[data-testid=connection]').textContent === 'live' && document.querySelectorAll('[data-testid=topology] [data-node]').length === 1")

        // A resync request gets a snapshot; a binary or oversized message ends that connection, and the master goes on.
        let answer = try await browser.runAsync("""
            const done = arguments[arguments.length - 1];
            const url = 'ws://' + location.host + '/api/ws?access_token=s3cret-token';
            const results = {};
            const a = new WebSocket(url);
            let n = 0;
            a.onmessage = (e) => {
              const m = JSON.parse(e.data);
              n++;
              if (n === 1) { results.first = m.type + ' ' + m.seq; a.send(JSON.stringify({type: 'resync'})); }
              else if (m.type === 'snapshot') { results.resync = m.type + ' ' + m.seq; a.close(); next(); }
            };
            function next() {
              const b = new WebSocket(url);
              b.onopen = () => b.send(new Uint8Array([1, 2, 3]));
              b.onclose = (e) => { results.binary = e.code; third(); };
            }
            function third() {
              const c = new WebSocket(url);
              c.onopen = () => c.send('x'.repeat(100000));
              c.onclose = (e) => { results.oversized = e.code; done(results); };
            }
            """, timeout: 30_000) as? [String: Any] ?? [:]
        #expect(answer["first"] as? String == "snapshot 1", "\(answer)")
        #expect((answer["resync"] as? String)?.hasPrefix("snapshot ") == true, "\(answer)")
        #expect(answer["binary"] as? Int != nil && answer["oversized"] as? Int != nil, "\(answer)")
        #expect(try await cluster.raw("m1", "GET", "/healthz").status == 200)
        try await browser.waitFor("the page still live", "return document.querySelector('[data-testid=connection]').textContent === 'live'")
    }
}
