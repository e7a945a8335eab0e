'use strict'
// Node.js side of the hyperdht-rs interop tests (MIT OR Apache-2.0).
//
// Protocol: newline-delimited JSON on stdin/stdout.
//   request: {"id": N, "cmd": "...", ...args}
//   reply:   {"id": N, "ok": true, "result": ...} | {"id": N, "ok": false, "error": "message"}
// Commands run concurrently; replies may come out of order and are matched by id.
// stdout carries replies only; every log line goes to stderr.
// On stdin EOF or the `shutdown` command all nodes are destroyed and the process exits 0.
// Nodes only ever bind 127.0.0.1.

const readline = require('readline')
const DHT = require('hyperdht')
const b4a = require('b4a')
const c = require('compact-encoding')
const Protomux = require('protomux')
const BlindRelay = require('blind-relay')

const HOST = '127.0.0.1'
const DEBUG = !!process.env.HYPERDHT_HARNESS_DEBUG

// Keep stdout clean for replies, whatever a dependency might print.
console.log = console.error
console.info = console.error

const nodes = new Map() // handle -> HyperDHT
const servers = new Map() // handle -> { server, seen }
const relays = new Map() // handle -> BlindRelay.Server
let nextHandle = 1
let shuttingDown = false

function log(...args) {
  if (DEBUG) console.error('[harness]', ...args)
}

process.on('unhandledRejection', (err) => {
  console.error('[harness] unhandled rejection:', err)
})

// ---- encoding helpers ------------------------------------------------------

function hex(buf) {
  return buf ? b4a.toString(buf, 'hex') : null
}

function fromHex(s, len, what) {
  if (s === undefined || s === null) return null
  if (typeof s !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(s)) throw new Error(`${what} must be hex`)
  const buf = b4a.from(s, 'hex')
  if (len && buf.byteLength !== len) throw new Error(`${what} must be ${len} bytes`)
  return buf
}

function peer(p) {
  return { host: p.host, port: p.port, id: hex(p.id) }
}

function addr(p) {
  return { host: p.host, port: p.port }
}

function parseAddr(s) {
  const [host, port] = s.split(':')
  return { host, port: Number(port) }
}

function peerRecord(p) {
  return { publicKey: hex(p.publicKey), relayAddresses: p.relayAddresses.map((a) => `${a.host}:${a.port}`) }
}

function getNode(args) {
  const dht = nodes.get(args.node)
  if (!dht) throw new Error(`unknown node handle ${args.node}`)
  return dht
}

function checkHost(host) {
  if (typeof host !== 'string') throw new Error('host must be a string')
  return host
}

function checkPort(port) {
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error('bad port')
  return port
}

function describe(handle, dht) {
  return {
    node: handle,
    host: HOST,
    port: dht.io.serverSocket.address().port,
    id: hex(dht.table.id),
    ephemeral: dht.ephemeral,
    firewalled: dht.firewalled
  }
}

// ---- node lifecycle --------------------------------------------------------

async function createNode(opts) {
  const o = { host: HOST, bootstrap: opts.bootstrap || [] }
  if (opts.port !== undefined && opts.port !== null) o.port = opts.port
  if (opts.ephemeral !== undefined && opts.ephemeral !== null) o.ephemeral = opts.ephemeral
  if (opts.firewalled !== undefined && opts.firewalled !== null) o.firewalled = opts.firewalled
  if (opts.quickFirewall === false) o.quickFirewall = false

  const dht = new DHT(o)
  const handle = nextHandle++
  nodes.set(handle, dht)
  try {
    await dht.fullyBootstrapped()
  } catch (err) {
    nodes.delete(handle)
    await dht.destroy().catch(() => {})
    throw err
  }
  if (shuttingDown) throw new Error('shutting down')
  log('node', handle, 'up on port', dht.io.serverSocket.address().port)
  return describe(handle, dht)
}

async function destroyNode(handle) {
  const dht = nodes.get(handle)
  if (!dht) return
  nodes.delete(handle)
  await dht.destroy()
}

async function destroyAll() {
  const handles = [...nodes.keys()].reverse()
  await Promise.allSettled(handles.map(destroyNode))
}

// ---- commands --------------------------------------------------------------

const commands = {
  async createNode(args) {
    return createNode({
      bootstrap: args.bootstrap,
      port: args.port,
      ephemeral: args.ephemeral,
      firewalled: args.firewalled,
      quickFirewall: args.quickFirewall
    })
  },

  // Same shape as hyperdht's testnet.js, always on 127.0.0.1.
  async testnet({ size }) {
    if (!Number.isInteger(size) || size < 1) throw new Error('size must be a positive integer')
    const first = await createNode({ bootstrap: [], ephemeral: false, firewalled: false })
    const bootstrap = [`${HOST}:${first.port}`]
    const list = [first]
    while (list.length < size) {
      list.push(await createNode({ bootstrap, ephemeral: false, firewalled: false }))
    }
    return { bootstrap, nodes: list }
  },

  async table(args) {
    return getNode(args).table.toArray().map(peer)
  },

  async info(args) {
    const dht = getNode(args)
    return {
      id: hex(dht.table.id),
      ephemeral: dht.ephemeral,
      firewalled: dht.firewalled,
      host: dht.host,
      port: dht.port,
      bootstrapped: dht.bootstrapped,
      tableSize: dht.table.toArray().length
    }
  },

  async findNode(args) {
    const dht = getNode(args)
    const target = fromHex(args.target, 32, 'target')
    if (!target) throw new Error('target is required')
    const q = dht.findNode(target)
    const replies = []
    for await (const m of q) replies.push({ host: m.from.host, port: m.from.port, id: hex(m.from.id) })
    return { closest: q.closestNodes.map(peer), replies }
  },

  async ping(args) {
    const dht = getNode(args)
    const res = await dht.ping({ host: checkHost(args.host), port: checkPort(args.port) })
    return { rtt_ms: res.rtt, id: hex(res.from.id) }
  },

  async request(args) {
    const dht = getNode(args)
    if (!Number.isInteger(args.command) || args.command < 0) throw new Error('bad command')
    const to = { id: null, host: checkHost(args.host), port: checkPort(args.port) }
    const req = dht.io.createRequest(
      to,
      fromHex(args.token, 32, 'token'),
      !!args.internal,
      args.command,
      fromHex(args.target, 32, 'target'),
      fromHex(args.value, 0, 'value'),
      null,
      0
    )
    if (req === null) throw new Error('node destroyed')
    if (args.socket === 'server') req.socket = dht.io.serverSocket
    else if (args.socket === 'client') req.socket = dht.io.clientSocket
    else if (args.socket !== undefined && args.socket !== null) throw new Error('bad socket')
    if (Number.isInteger(args.retries) && args.retries >= 0) req.retries = args.retries

    return new Promise((resolve, reject) => {
      req.onresponse = (res) =>
        resolve({
          tid: res.tid,
          from: peer(res.from),
          to: addr(res.to),
          token: hex(res.token),
          closerNodes: (res.closerNodes || []).map(addr),
          error: res.error,
          value: hex(res.value)
        })
      req.onerror = (err) => {
        if (err && err.code === 'REQUEST_TIMEOUT') resolve({ timeout: true })
        else reject(err)
      }
      req.send()
    })
  },

  // A dht-rpc query with an application command (external, as `dht.query` sends it). Returns
  // every reply the walk got (errors included, which the query stream itself hides), and what
  // the walk cost this node in timeouts and DOWN_HINTs sent.
  async query(args) {
    const dht = getNode(args)
    if (!Number.isInteger(args.command) || args.command < 0) throw new Error('bad command')
    const target = fromHex(args.target, 32, 'target')
    if (!target) throw new Error('target is required')
    const before = {
      timeouts: dht.io.stats.requests.timeouts,
      downHints: dht.stats.commands.downHint.tx
    }
    const q = dht.query({ target, command: args.command, value: fromHex(args.value, 0, 'value') })
    const replies = []
    // The query hides error replies from its stream; its visit callback sees every reply.
    const onvisit = q._onvisitbound
    q._onvisitbound = (m, req) => {
      replies.push({
        tid: m.tid,
        from: peer(m.from),
        to: addr(m.to),
        error: m.error,
        token: hex(m.token),
        closerNodes: (m.closerNodes || []).map(addr),
        value: hex(m.value)
      })
      onvisit(m, req)
    }
    const started = Date.now()
    let error = null
    try {
      await q.finished()
    } catch (err) {
      error = err.message
    }
    return {
      replies,
      error,
      successes: q.successes,
      errors: q.errors,
      elapsedMs: Date.now() - started,
      timeouts: dht.io.stats.requests.timeouts - before.timeouts,
      downHintsSent: dht.stats.commands.downHint.tx - before.downHints
    }
  },

  // ---- hyperdht records ----

  async keyPair({ seed }) {
    const kp = DHT.keyPair(fromHex(seed, 32, 'seed'))
    return { publicKey: hex(kp.publicKey) }
  },

  async announce(args) {
    const dht = getNode(args)
    const kp = DHT.keyPair(fromHex(args.seed, 32, 'seed'))
    const relays = (args.relayAddresses || []).map(parseAddr)
    const q = dht.announce(fromHex(args.topic, 32, 'topic'), kp, relays)
    await q.finished()
    return { closest: q.closestNodes.map(addr) }
  },

  async unannounce(args) {
    const dht = getNode(args)
    const kp = DHT.keyPair(fromHex(args.seed, 32, 'seed'))
    await dht.unannounce(fromHex(args.topic, 32, 'topic'), kp)
    return null
  },

  async lookup(args) {
    const dht = getNode(args)
    const out = []
    for await (const r of dht.lookup(fromHex(args.topic, 32, 'topic'))) {
      out.push({ from: addr(r.from), bump: r.bump, peers: r.peers.map(peerRecord) })
    }
    return out
  },

  async findPeer(args) {
    const dht = getNode(args)
    const out = []
    for await (const r of dht.findPeer(fromHex(args.publicKey, 32, 'publicKey'))) {
      out.push({ from: addr(r.from), peer: peerRecord(r.peer) })
    }
    return out
  },

  async mutablePut(args) {
    const dht = getNode(args)
    const kp = DHT.keyPair(fromHex(args.seed, 32, 'seed'))
    const r = await dht.mutablePut(kp, fromHex(args.value, 0, 'value'), { seq: args.seq || 0 })
    return { seq: r.seq, signature: hex(r.signature), closest: r.closestNodes.length }
  },

  async mutableGet(args) {
    const dht = getNode(args)
    const r = await dht.mutableGet(fromHex(args.publicKey, 32, 'publicKey'), { seq: args.seq || 0 })
    return r ? { seq: r.seq, value: hex(r.value), signature: hex(r.signature), from: addr(r.from) } : null
  },

  async immutablePut(args) {
    const dht = getNode(args)
    const r = await dht.immutablePut(fromHex(args.value, 0, 'value'))
    return { hash: hex(r.hash), closest: r.closestNodes.length }
  },

  async immutableGet(args) {
    const dht = getNode(args)
    const r = await dht.immutableGet(fromHex(args.hash, 32, 'hash'))
    return r ? { value: hex(r.value), from: addr(r.from) } : null
  },

  // ---- servers and connections ----

  // An echo server: every connection gets its data written back. Options: `neverPunch`
  // (refuse every holepunch, share no local address: only a blind relay can reach it) and
  // `relayThrough` (hex key: ask clients to meet at this blind relay).
  async listen(args) {
    const dht = getNode(args)
    const kp = DHT.keyPair(fromHex(args.seed, 32, 'seed'))
    const opts = {}
    if (args.neverPunch) {
      opts.holepunch = () => false
      opts.shareLocalAddress = false
    }
    if (args.relayThrough) opts.relayThrough = fromHex(args.relayThrough, 32, 'relayThrough')
    const server = dht.createServer(opts, (socket) => {
      socket.on('data', (d) => socket.write(d))
      socket.on('error', () => {})
    })
    await server.listen(kp)
    return { publicKey: hex(kp.publicKey) }
  },

  // A blind relay server (npm blind-relay) listening on the node with the key from `seed`,
  // as hyperdht's own tests run one.
  async createRelay(args) {
    const dht = getNode(args)
    const kp = DHT.keyPair(fromHex(args.seed, 32, 'seed'))
    const relay = new BlindRelay.Server({
      createStream(opts) {
        return dht.createRawStream({ ...opts, framed: true })
      }
    })
    const server = dht.createServer((socket) => {
      const session = relay.accept(socket, { id: socket.remotePublicKey })
      session.on('error', (err) => log('relay session error', err.message))
    })
    await server.listen(kp)
    const handle = nextHandle++
    relays.set(handle, relay)
    return { relay: handle, publicKey: hex(kp.publicKey) }
  },

  async relayStats(args) {
    const relay = relays.get(args.relay)
    if (!relay) throw new Error('unknown relay')
    const { pairings, streams } = relay.stats
    return {
      pairings: { ...pairings },
      streams: { opened: streams.opened, closed: streams.closed, errors: streams.errors }
    }
  },

  // Connects, writes `message`, waits for the same bytes back. Options as in JS `connect`:
  // `relayThrough` (hex key), `fastOpen` and `localConnection` (pass false to turn off).
  async connectEcho(args) {
    const dht = getNode(args)
    const message = fromHex(args.message, 0, 'message')
    const opts = {}
    if (args.relayThrough) opts.relayThrough = fromHex(args.relayThrough, 32, 'relayThrough')
    if (args.fastOpen === false) opts.fastOpen = false
    if (args.localConnection === false) opts.localConnection = false
    const socket = dht.connect(fromHex(args.publicKey, 32, 'publicKey'), opts)
    return new Promise((resolve, reject) => {
      let got = b4a.alloc(0)
      socket.on('error', reject)
      socket.on('open', () => socket.write(message))
      socket.on('data', (d) => {
        got = b4a.concat([got, d])
        if (got.byteLength >= message.byteLength) {
          const remote = hex(socket.remotePublicKey)
          socket.end()
          resolve({ echo: hex(got), remotePublicKey: remote })
        }
      })
    })
  },

  // Connects, writes each of `messages` (hex) as one message, and collects `data` events
  // until as many came back as were sent; returns them (hex) with their boundaries as JS saw
  // them. The peer is expected to echo message by message.
  async connectMessages(args) {
    const dht = getNode(args)
    const messages = args.messages.map((m, i) => fromHex(m, 0, `messages[${i}]`))
    const socket = dht.connect(fromHex(args.publicKey, 32, 'publicKey'))
    return new Promise((resolve, reject) => {
      const received = []
      socket.on('error', reject)
      socket.on('open', () => {
        for (const m of messages) socket.write(m)
      })
      socket.on('data', (d) => {
        received.push(hex(d))
        if (received.length === messages.length) {
          socket.end()
          resolve({ received })
        }
      })
    })
  },

  // A server speaking protomux on each connection. It accepts 'hyperdht-rs/echo' channels
  // (any id; messages: 0 raw, 1 string), answers with handshake 'js echo', sends a corked
  // batch (raw 'batched-1', string 'batched-2') once open, and echoes: raw as is, strings as
  // 'echo: ' + s. It also opens 'hyperdht-rs/js-first' (id 'j', handshake 'from js') and
  // sends the string 'js says hi' on it once the peer answers. `protomuxSeen` lists what
  // happened, in order.
  async listenProtomux(args) {
    const dht = getNode(args)
    const kp = DHT.keyPair(fromHex(args.seed, 32, 'seed'))
    const seen = []
    const server = dht.createServer((socket) => {
      socket.on('error', () => {})
      const mux = Protomux.from(socket)
      mux.pair({ protocol: 'hyperdht-rs/echo' }, (id) => {
        const ch = mux.createChannel({
          protocol: 'hyperdht-rs/echo',
          id,
          handshake: c.raw,
          onopen(handshake) {
            seen.push('open echo ' + hex(id || b4a.alloc(0)) + ' ' + b4a.toString(handshake))
            ch.cork()
            raw.send(b4a.from('batched-1'))
            str.send('batched-2')
            ch.uncork()
          },
          onclose(isRemote) {
            seen.push('close echo remote=' + isRemote)
          }
        })
        const raw = ch.addMessage({ encoding: c.raw, onmessage: (m) => raw.send(m) })
        const str = ch.addMessage({ encoding: c.string, onmessage: (m) => str.send('echo: ' + m) })
        ch.open(b4a.from('js echo'))
      })
      const first = mux.createChannel({
        protocol: 'hyperdht-rs/js-first',
        id: b4a.from('j'),
        handshake: c.raw,
        onopen(handshake) {
          seen.push('open js-first ' + b4a.toString(handshake))
          hi.send('js says hi')
        },
        onclose(isRemote) {
          seen.push('close js-first remote=' + isRemote)
        }
      })
      const hi = first.addMessage({ encoding: c.string })
      first.open(b4a.from('from js'))
    })
    await server.listen(kp)
    const handle = nextHandle++
    servers.set(handle, { server, seen })
    return { server: handle, publicKey: hex(kp.publicKey) }
  },

  // What a protomux server saw, once a line starting with `until` is among it (at most
  // `timeoutMs`, default 10 s; then it fails).
  async protomuxSeen(args) {
    const s = servers.get(args.server)
    if (!s) throw new Error('unknown server')
    const started = Date.now()
    const timeoutMs = args.timeoutMs || 10000
    while (!s.seen.some((l) => l.startsWith(args.until))) {
      if (Date.now() - started > timeoutMs) {
        throw new Error('no ' + JSON.stringify(args.until) + ' in ' + JSON.stringify(s.seen))
      }
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return s.seen
  },

  // Connects, opens a 'hyperdht-rs/echo' channel with id `channelId` (hex) and handshake
  // 'js client', sends `raw` (hex, message 0) and `text` (message 1) in one corked batch,
  // and waits for two messages back; returns the peer's handshake and what came back, then
  // closes.
  async connectProtomux(args) {
    const dht = getNode(args)
    const socket = dht.connect(fromHex(args.publicKey, 32, 'publicKey'))
    return new Promise((resolve, reject) => {
      socket.on('error', reject)
      const mux = Protomux.from(socket)
      const got = {}
      const ch = mux.createChannel({
        protocol: 'hyperdht-rs/echo',
        id: fromHex(args.channelId, 0, 'channelId'),
        handshake: c.raw,
        onopen(handshake) {
          got.handshake = b4a.toString(handshake)
          ch.cork()
          raw.send(fromHex(args.raw, 0, 'raw'))
          str.send(args.text)
          ch.uncork()
        },
        onclose(isRemote) {
          if (!got.done) reject(new Error('channel closed early, remote=' + isRemote))
        }
      })
      const done = () => {
        if (got.raw !== undefined && got.text !== undefined) {
          got.done = true
          ch.close()
          socket.end()
          resolve({ handshake: got.handshake, raw: got.raw, text: got.text })
        }
      }
      const raw = ch.addMessage({ encoding: c.raw, onmessage: (m) => { got.raw = hex(m); done() } })
      const str = ch.addMessage({ encoding: c.string, onmessage: (m) => { got.text = m; done() } })
      ch.open(b4a.from('js client'))
    })
  },

  // An echo server whose firewall callback records (and may deny) client keys.
  async listenFirewall(args) {
    const dht = getNode(args)
    const kp = DHT.keyPair(fromHex(args.seed, 32, 'seed'))
    const seen = []
    const deny = new Set(args.deny || [])
    const server = dht.createServer(
      {
        firewall(remotePublicKey) {
          const k = hex(remotePublicKey)
          seen.push(k)
          return deny.has(k)
        }
      },
      (socket) => {
        socket.on('data', (d) => socket.write(d))
        socket.on('error', () => {})
      }
    )
    await server.listen(kp)
    const handle = nextHandle++
    servers.set(handle, { server, seen })
    return { server: handle, publicKey: hex(kp.publicKey) }
  },

  async firewallSeen(args) {
    const s = servers.get(args.server)
    if (!s) throw new Error('unknown server')
    return s.seen
  },

  // Connects and reports whether a path was chosen (the raw stream attached) within `waitMs`,
  // without needing the stream to open.
  async connectObserve(args) {
    const dht = getNode(args)
    const opts = {}
    if (args.localConnection === false) opts.localConnection = false
    if (args.seed) opts.keyPair = DHT.keyPair(fromHex(args.seed, 32, 'seed'))
    const socket = dht.connect(fromHex(args.publicKey, 32, 'publicKey'), opts)
    let error = null
    socket.on('error', (err) => {
      error = (err && err.code) || String(err)
    })
    const waitMs = args.waitMs || 15000
    const started = Date.now()
    await new Promise((resolve) => {
      const timer = setInterval(() => {
        if (socket.rawStream || error || Date.now() - started > waitMs) {
          clearInterval(timer)
          resolve()
        }
      }, 20)
    })
    const raw = socket.rawStream
    const result = {
      pathChosen: !!raw,
      remoteHost: raw ? raw.remoteHost : null,
      remotePort: raw ? raw.remotePort : null,
      error,
      punches: JSON.parse(JSON.stringify(dht.stats.punches))
    }
    socket.destroy()
    return result
  },

  async stats(args) {
    return JSON.parse(JSON.stringify(getNode(args).stats))
  },

  async destroy(args) {
    getNode(args)
    await destroyNode(args.node)
    return null
  }
}

// ---- I/O loop --------------------------------------------------------------

function send(msg) {
  process.stdout.write(JSON.stringify(msg) + '\n')
}

async function shutdown() {
  if (shuttingDown) return
  shuttingDown = true
  log('shutting down')
  await destroyAll()
  // stdout to a pipe is synchronous on POSIX, but wait for the flush to be safe.
  process.stdout.write('', () => process.exit(0))
}

async function handle(line) {
  let msg
  try {
    msg = JSON.parse(line)
  } catch (err) {
    console.error('[harness] bad JSON line:', line)
    return
  }
  const id = msg.id
  if (msg.cmd === 'shutdown') {
    send({ id, ok: true, result: null })
    await shutdown()
    return
  }
  try {
    const fn = Object.prototype.hasOwnProperty.call(commands, msg.cmd) ? commands[msg.cmd] : null
    if (!fn) throw new Error(`unknown command ${JSON.stringify(msg.cmd)}`)
    if (shuttingDown) throw new Error('shutting down')
    const result = await fn(msg)
    send({ id, ok: true, result: result === undefined ? null : result })
  } catch (err) {
    log('command', msg.cmd, 'failed:', err)
    send({ id, ok: false, error: String((err && err.message) || err) })
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => {
  if (line.trim() !== '') handle(line)
})
rl.on('close', () => shutdown())
