'use strict'
// Secret streams. A: libsodium crypto_secretstream_xchacha20poly1305 with a fixed key (the
// fixed handshake's initiator tx, handshake.js) and header 00..17. B: every frame two real
// @hyperswarm/secret-stream instances exchange over an in-memory pipe, with the fixed
// handshake's keys and seeded randomness (lib.js), and an unordered message sealed with a
// chosen counter.
const sodium = require('sodium-universal')
const crypto = require('hypercore-crypto')
const { Duplex } = require('streamx')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const { hex, blake2b, deterministic, run, check } = require('./lib')
const { handshake } = require('./handshake')

deterministic('secretstream')

const TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
const TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
const ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
const STATEBYTES = sodium.crypto_secretstream_xchacha20poly1305_STATEBYTES

const uint24 = (n) => Buffer.from([n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff])

// The state libsodium's init_push builds for `header` (init_pull builds the same one).
function stateFor (key, header) {
  const state = Buffer.alloc(STATEBYTES)
  sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
  return state
}

function push (state, plaintext, tag) {
  const out = Buffer.alloc(plaintext.length + ABYTES)
  sodium.crypto_secretstream_xchacha20poly1305_push(state, out, plaintext, null, tag)
  return out
}

function pull (state, ciphertext) {
  const out = Buffer.alloc(ciphertext.length - ABYTES)
  const tag = Buffer.alloc(1)
  sodium.crypto_secretstream_xchacha20poly1305_pull(state, out, tag, ciphertext, null)
  return { plaintext: out, tag: tag[0] }
}

// A raw stream standing in for a UDX stream; records everything written or sent on it.
function pipe (name, log) {
  let other = null
  const d = new Duplex({
    write (data, cb) {
      log.push({ from: name, kind: 'stream', bytes: Buffer.from(data) })
      other.push(Buffer.from(data))
      cb(null)
    },
    final (cb) { other.push(null); cb(null) }
  })
  d.send = async (buf) => {
    log.push({ from: name, kind: 'udx-message', bytes: Buffer.from(buf) })
    other.emit('message', Buffer.from(buf))
    return true
  }
  d.trySend = (buf) => { d.send(buf) }
  d.link = (p) => { other = p }
  return d
}

run(async () => {
  const hs = handshake()
  const f = hs.client

  // ---- A
  const key = f.tx
  const header = Buffer.from(Array.from({ length: 24 }, (_, i) => i))
  const tx = stateFor(key, header)
  const rx = stateFor(key, header)
  const plaintexts = [Buffer.from('hello'), Buffer.alloc(0), Buffer.from('second message, a bit longer than sixteen bytes')]
  const messages = []
  for (const p of plaintexts) {
    const ct = push(tx, p, TAG_MESSAGE)
    const back = pull(rx, ct)
    check(back.plaintext.equals(p) && back.tag === TAG_MESSAGE, 'libsodium pulls what it pushed')
    messages.push({ plaintext: hex(p), tag: TAG_MESSAGE, ciphertext: hex(ct), frameOnWire: hex(Buffer.concat([uint24(ct.length), ct])) })
  }
  const finalState = stateFor(key, header)
  const finalTagEmpty = push(finalState, Buffer.alloc(0), TAG_FINAL)
  check(pull(stateFor(key, header), finalTagEmpty).tag === TAG_FINAL, 'TAG_FINAL')

  // ---- B
  const log = []
  const rawI = pipe('initiator', log)
  const rawR = pipe('responder', log)
  rawI.link(rawR)
  rawR.link(rawI)
  const keepAlive = 5000
  const sI = new NoiseSecretStream(true, rawI, {
    handshake: { tx: f.tx, rx: f.rx, hash: f.hash, publicKey: f.publicKey, remotePublicKey: f.remotePublicKey },
    keepAlive
  })
  const s = hs.server
  const sR = new NoiseSecretStream(false, rawR, {
    handshake: { tx: s.tx, rx: s.rx, hash: s.hash, publicKey: s.publicKey, remotePublicKey: s.remotePublicKey },
    keepAlive
  })
  const data = []
  const unordered = []
  sR.on('data', (d) => data.push(Buffer.from(d).toString()))
  sR.on('message', (d) => unordered.push(Buffer.from(d).toString()))
  await sI.opened
  await sR.opened
  sI.write(Buffer.from('hello'))
  sI.sendKeepAlive() // an empty message; a receiver with keepAlive set drops it
  sI.write(Buffer.from('world'))
  await sI.send(Buffer.from('unordered datagram'))
  await new Promise((resolve) => setTimeout(resolve, 50))
  check(data.join('|') === 'hello|world', 'the responder read hello, world: ' + data)
  check(unordered.join('|') === 'unordered datagram', 'the responder got the unordered message')

  const [nsInitiator, nsResponder, nsSend] = crypto.namespace('hyperswarm/secret-stream', 3)
  const ids = { initiator: blake2b(nsInitiator, f.hash), responder: blake2b(nsResponder, f.hash) }
  let fromInitiator = null
  const frames = log.map((e) => {
    const frame = { from: e.from, kind: e.kind, hex: hex(e.bytes) }
    if (e.kind === 'stream') {
      const len = e.bytes[0] | (e.bytes[1] << 8) | (e.bytes[2] << 16)
      check(len === e.bytes.length - 3, 'one frame per write')
      const body = e.bytes.subarray(3)
      if (len === 32 + 24) {
        check(body.subarray(0, 32).equals(ids[e.from]), 'stream id of the ' + e.from)
        frame.decoded = { type: 'id+header', id: hex(body.subarray(0, 32)), secretstreamHeader: hex(body.subarray(32)) }
        if (e.from === 'initiator') fromInitiator = stateFor(f.tx, body.subarray(32))
      } else if (e.from === 'initiator') {
        const { plaintext, tag } = pull(fromInitiator, body)
        frame.decoded = { type: 'message', tag, plaintext: plaintext.toString() }
      }
    } else {
      const secret = blake2b(Buffer.concat([nsInitiator, nsSend]), f.hash)
      const nonce = Buffer.alloc(24)
      e.bytes.copy(nonce, 0, 0, 8)
      const plaintext = Buffer.alloc(e.bytes.length - 8 - 16)
      check(sodium.crypto_secretbox_open_easy(plaintext, e.bytes.subarray(8), nonce, secret), 'unordered message opens')
      frame.decoded = { type: 'unordered', counter8: hex(e.bytes.subarray(0, 8)), plaintext: plaintext.toString() }
    }
    return frame
  })

  // An unordered message with counter 0102030405060708: the stream increments its counter
  // (little endian) before sealing, so it starts one below.
  const counter = Buffer.from('0102030405060708', 'hex')
  const start = Buffer.from(counter)
  start[0] -= 1
  sI._sendState.subarray(64, 72).set(start)
  const before = log.length
  unordered.length = 0
  await sI.send(Buffer.from('ping'))
  await new Promise((resolve) => setTimeout(resolve, 20))
  check(log.length === before + 1, 'one envelope sent')
  const envelope = log[before].bytes
  check(envelope.subarray(0, 8).equals(counter), 'the envelope starts with the counter')
  check(unordered.join('|') === 'ping', 'the real responder opened the envelope')
  const sendKeyInitiator = sI._sendState.subarray(0, 32)
  const sendKeyResponder = sR._sendState.subarray(0, 32)
  check(sendKeyInitiator.equals(blake2b(Buffer.concat([nsInitiator, nsSend]), f.hash)), 'initiator send key')
  check(sendKeyResponder.equals(blake2b(Buffer.concat([nsResponder, nsSend]), f.hash)), 'responder send key')

  sI.destroy()
  sR.destroy()
  return {
    A: { key: hex(key), header: hex(header), messages, finalTagEmpty: hex(finalTagEmpty) },
    B: {
      handshake: { initiatorTx: hex(f.tx), initiatorRx: hex(f.rx), hash: hex(f.hash) },
      ids: { initiator: hex(ids.initiator), responder: hex(ids.responder) },
      frames,
      unorderedFixed: {
        sendKeyInitiator: hex(sendKeyInitiator),
        sendKeyResponder: hex(sendKeyResponder),
        counter: hex(counter),
        plaintext: 'ping',
        envelope: hex(envelope)
      }
    }
  }
})
