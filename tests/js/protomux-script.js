// One real `protomux` (3.12, tests/js/node_modules/protomux/index.js) driven step by step by
// the Rust interop test tests/tests/interop_protomux.rs, for sequences where the order in
// which messages cross matters (the fuzz target's scripts): the mux sits on a stand-in
// stream that keeps what the mux writes until the test asks for it and hands the mux exactly
// the messages the test gives it.
//
// Protocol (newline-delimited JSON, one reply line per request line, in order):
//   {"cmd": "pair", "protocol", "id"}           mux.pair; opens are reported as "incoming"
//                                               and wait (the notify promise stays
//                                               pending) until an "open" answers them
//   {"cmd": "open", "protocol", "id", "handshake"}
//                                               createChannel (unique: false, raw handshake,
//                                               256 raw message types: all a script names)
//                                               + open; replies {"localId"} (0 if
//                                               createChannel gave null)
//   {"cmd": "send", "localId", "type", "payload"} on an open channel only
//   {"cmd": "close", "localId"}
//   {"cmd": "recv", "data"}                     one message from the peer
//   {"cmd": "take"}                             what the mux wrote so far: {"out": [hex]}
//   {"cmd": "channels"}                         the local ids of the open channels: {"open"}
// Every reply also has "events" (what happened since the last reply, in order: "incoming
// <protocol> <id>", "open <localId> <handshake>", "message <localId> <type> <payload>",
// "close <localId> remote=<bool>") and "error" (the message the mux destroyed its stream
// with, or null). Ids, handshakes and payloads are hex. Before replying the script lets
// every queued tick and promise job run (one setImmediate turn), since protomux finishes
// opens on a tick and answers pair requests after a promise.

const Protomux = require('protomux')
const c = require('compact-encoding')
const b4a = require('b4a')
const { EventEmitter } = require('events')
const readline = require('readline')

const hex = (b) => (b ? b4a.toString(b, 'hex') : '')
const fromHex = (s) => (s === null || s === undefined ? null : b4a.from(s, 'hex'))

// What protomux needs of a stream: writes are kept, data is emitted by the script.
class HeldStream extends EventEmitter {
  constructor() {
    super()
    this.userData = null
    this.destroyed = false
    this.error = null
    this.out = []
  }

  write(buffer) {
    this.out.push(hex(buffer))
    return true
  }

  pause() {}
  resume() {}
  end() {}

  destroy(err) {
    if (this.destroyed) return
    this.destroyed = true
    this.error = err ? err.message : 'destroyed'
    this.emit('close')
  }
}

const stream = new HeldStream()
const mux = Protomux.from(stream)
const events = []
// The pending notify promises of each pair key, resolved one per answering open.
const waiting = new Map()
const keyOf = (protocol, id) => protocol + '##' + (id ? hex(id) : '')

const commands = {
  pair({ protocol, id }) {
    mux.pair({ protocol, id: fromHex(id) }, (remoteId) => {
      events.push('incoming ' + protocol + ' ' + hex(remoteId))
      return new Promise((resolve) => {
        const key = keyOf(protocol, remoteId)
        if (!waiting.has(key)) waiting.set(key, [])
        waiting.get(key).push(resolve)
      })
    })
    return {}
  },

  open({ protocol, id, handshake }) {
    const channelId = fromHex(id)
    const ch = mux.createChannel({
      protocol,
      id: channelId,
      unique: false,
      handshake: c.raw,
      onopen(hs) {
        events.push('open ' + ch._localId + ' ' + hex(hs))
      },
      onclose(isRemote) {
        events.push('close ' + ch.localIdBeforeClose + ' remote=' + isRemote)
      }
    })
    if (ch === null) return { localId: 0 }
    for (let type = 0; type < 256; type++) {
      ch.addMessage({
        encoding: c.raw,
        onmessage(m) {
          events.push('message ' + ch._localId + ' ' + type + ' ' + hex(m))
        }
      })
    }
    ch.open(fromHex(handshake || ''))
    ch.localIdBeforeClose = ch._localId
    const pending = waiting.get(keyOf(protocol, channelId))
    if (pending && pending.length > 0) pending.shift()()
    return { localId: ch._localId }
  },

  // Only on an open channel, as the Rust side can (JS would also send before the peer
  // answered).
  send({ localId, type, payload }) {
    const ch = mux._local[localId - 1]
    if (!ch || !ch.opened) return { sent: false }
    return { sent: ch.messages[type].send(fromHex(payload)) }
  },

  close({ localId }) {
    const ch = mux._local[localId - 1]
    if (!ch) return { closed: false }
    ch.close()
    return { closed: true }
  },

  recv({ data }) {
    stream.emit('data', fromHex(data))
    return {}
  },

  channels() {
    return { open: [...mux].filter((ch) => ch.opened && !ch.closed).map((ch) => ch._localId) }
  },

  take() {
    const out = stream.out
    stream.out = []
    return { out }
  }
}

const rl = readline.createInterface({ input: process.stdin })
let chain = Promise.resolve()
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let reply
    try {
      const req = JSON.parse(line)
      const cmd = commands[req.cmd]
      if (!cmd) throw new Error('unknown command ' + req.cmd)
      reply = cmd(req)
      await new Promise((resolve) => setImmediate(resolve))
      reply.ok = true
    } catch (err) {
      reply = { ok: false, failure: err.message }
    }
    reply.events = events.splice(0)
    reply.error = stream.error
    process.stdout.write(JSON.stringify(reply) + '\n')
  })
})
rl.on('close', () => {
  chain.then(() => process.exit(0))
})
