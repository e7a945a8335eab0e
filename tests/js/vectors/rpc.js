'use strict'
// A dht-rpc datagram codec written from the wire format (as a port would), and raw UDP probe
// sockets, for the captures in wire.js and relay.js. Captures run on 127.0.0.2 with fixed
// ports (node 49737, probes 40000 and 40001): the bytes contain those addresses.
const dgram = require('dgram')
const c = require('compact-encoding')
const { hex, ipv4 } = require('./lib')

const HOST = '127.0.0.2'
const NODE_PORT = 49737

// type 0x03 | flags | tid u16 | to | [id] [token] command [target] [value]
function encodeRequest ({ tid, to, id = null, token = null, internal = false, command, target = null, value = null }) {
  const flags = (id ? 1 : 0) | (token ? 2 : 0) | (internal ? 4 : 0) | (target ? 8 : 0) | (value ? 16 : 0)
  const tidBytes = Buffer.alloc(2)
  tidBytes.writeUInt16LE(tid)
  const parts = [Buffer.from([0x03, flags]), tidBytes, ipv4(to.host, to.port)]
  if (id) parts.push(id)
  if (token) parts.push(token)
  parts.push(c.encode(c.uint, command))
  if (target) parts.push(target)
  if (value) parts.push(c.encode(c.buffer, value))
  return Buffer.concat(parts)
}

// Decodes a request (0x03) or response (0x13); 32-byte fields as hex, value as a Buffer.
function decode (buf) {
  const s = { start: 0, end: buf.length, buffer: buf }
  const type = c.uint8.decode(s)
  const flags = c.uint.decode(s)
  const tid = c.uint16.decode(s)
  const to = c.ipv4Address.decode(s)
  const out = { type, flags, tid, to: to.host + ':' + to.port }
  out.id = flags & 1 ? hex(c.fixed32.decode(s)) : null
  out.token = flags & 2 ? hex(c.fixed32.decode(s)) : null
  if (type === 0x03) {
    out.internal = (flags & 4) !== 0
    out.command = c.uint.decode(s)
    out.target = flags & 8 ? hex(c.fixed32.decode(s)) : null
    out.value = flags & 16 ? c.buffer.decode(s) : null
  } else if (type === 0x13) {
    out.closerNodes = flags & 4 ? c.array(c.ipv4Address).decode(s).map((a) => a.host + ':' + a.port) : null
    out.error = flags & 8 ? c.uint.decode(s) : 0
    out.value = flags & 16 ? c.buffer.decode(s) : null
  } else {
    throw new Error('not a dht-rpc datagram: ' + hex(buf))
  }
  if (s.start !== s.end) throw new Error('trailing bytes in ' + hex(buf))
  return out
}

// The JSON view of a response the tests compare with: flags, tid, to, id, token, closerNodes,
// error and the value as hex.
function responseView (buf) {
  const d = decode(buf)
  if (d.type !== 0x13) throw new Error('expected a response: ' + hex(buf))
  return {
    flags: d.flags,
    tid: d.tid,
    to: d.to,
    id: d.id,
    token: d.token,
    closerNodes: d.closerNodes,
    error: d.error,
    value: d.value ? hex(d.value) : null
  }
}

// A UDP socket on HOST:port that hands out received datagrams one at a time.
async function probe (port) {
  const sock = dgram.createSocket('udp4')
  const inbox = []
  const waiting = []
  sock.on('message', (msg) => {
    if (waiting.length) waiting.shift()(msg)
    else inbox.push(msg)
  })
  await new Promise((resolve, reject) => {
    sock.once('error', reject)
    sock.bind(port, HOST, () => { sock.removeListener('error', reject); resolve() })
  })
  return {
    next (ms = 5000) {
      if (inbox.length) return Promise.resolve(inbox.shift())
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no datagram on port ' + port + ' within ' + ms + ' ms')), ms)
        waiting.push((msg) => { clearTimeout(timer); resolve(msg) })
      })
    },
    send (buf, toPort = NODE_PORT) {
      return new Promise((resolve, reject) => sock.send(buf, toPort, HOST, (err) => err ? reject(err) : resolve()))
    },
    close () { return new Promise((resolve) => sock.close(resolve)) }
  }
}

// A persistent hyperdht node on HOST:NODE_PORT with the token secrets the Rust tests pin
// (41.. and 42..) and no rotation.
async function persistentNode (HyperDHT) {
  const node = HyperDHT.bootstrapper(NODE_PORT, HOST, { host: HOST })
  await node.fullyBootstrapped()
  if (node.ephemeral) throw new Error('the bootstrapper did not become persistent')
  node.io._secrets = [Buffer.alloc(32, 0x41), Buffer.alloc(32, 0x42)]
  node.io._rotateSecrets = Infinity
  return node
}

module.exports = { HOST, NODE_PORT, encodeRequest, decode, responseView, probe, persistentNode }
