'use strict'
// A UDX transcript from the real udx-native: two streams on 127.0.0.1 talk through a UDP
// proxy that records every datagram's header (and drops one chosen packet to provoke SACKs
// and a retransmit). Ports are random and left out; so are timestamps. How many pure ACKs,
// SACKs and HEARTBEATs appear depends on timing (see tests/tests/vectors_fresh.rs for what a
// freshness check compares). The bulk transfer of step 8 is summarised in `mtu`.
const dgram = require('dgram')
const UDX = require('udx-native')
const { hex, deterministic, run } = require('./lib')

deterministic('udx')

const FLAG_NAMES = [[1, 'DATA'], [2, 'END'], [4, 'SACK'], [8, 'MESSAGE'], [16, 'DESTROY'], [32, 'HEARTBEAT']]
const LOCAL = '127.0.0.1'

// The fields of a datagram: a UDX header (magic ff 01, 20 bytes) and its body, or raw bytes.
function packet (dir, drop, buf) {
  if (buf.length < 20 || buf[0] !== 0xff || buf[1] !== 1) return { dir, udx: false, len: buf.length, hex: hex(buf) }
  const flags = buf[2]
  const p = {
    dir,
    drop,
    len: buf.length,
    flags,
    names: FLAG_NAMES.filter(([bit]) => flags & bit).map(([, n]) => n).join('|') || 'ACK',
    off: buf[3],
    id: buf.readUInt32LE(4),
    rwnd: buf.readUInt32LE(8),
    seq: buf.readUInt32LE(12),
    ack: buf.readUInt32LE(16),
    hdr: hex(buf.subarray(0, 20))
  }
  const body = buf.subarray(20)
  if (flags & 4) {
    p.sacks = []
    for (let i = 0; i + 8 <= body.length; i += 8) p.sacks.push([body.readUInt32LE(i), body.readUInt32LE(i + 4)])
  } else if (body.length) {
    p.payloadLen = body.length - p.off
  }
  return p
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const bindDgram = (s) => new Promise((resolve) => s.bind(0, LOCAL, resolve))

run(async () => {
  const udx = new UDX()
  const sockA = udx.createSocket()
  const sockB = udx.createSocket()
  sockA.bind(0, LOCAL)
  sockB.bind(0, LOCAL)
  const X = dgram.createSocket('udp4') // A talks to X
  const Y = dgram.createSocket('udp4') // B hears from Y
  await bindDgram(X)
  await bindDgram(Y)
  const portA = sockA.address().port
  const portB = sockB.address().port
  const portX = X.address().port
  const portY = Y.address().port

  const packets = []
  let sink = packets // the bulk phase records elsewhere
  let drop = () => false
  X.on('message', (msg) => {
    const p = packet('A->B', false, msg)
    p.drop = p.udx !== false && drop(p)
    sink.push(p)
    if (!p.drop) Y.send(msg, portB, LOCAL)
  })
  Y.on('message', (msg) => {
    sink.push(packet('B->A', false, msg))
    X.send(msg, portA, LOCAL)
  })

  const ID_A = 0x11111111
  const ID_B = 0x22222222
  const ID_C = 0x33333333
  const ID_D = 0x44444444
  const events = []
  const a = udx.createStream(ID_A)
  const b = udx.createStream(ID_B, {
    // As a hyperdht server's raw stream: connect to whoever sent the first packet.
    firewall (socket, port, host) {
      events.push('B firewall callback from ' + host + ' -> connect')
      b.connect(socket, ID_A, port, host)
      return false
    }
  })
  const received = []
  b.on('data', (d) => received.push(d))
  b.on('message', (d) => events.push('B got unordered message ' + JSON.stringify(d.toString())))
  b.on('end', () => { events.push('B end'); b.end() })
  a.on('end', () => events.push('A end'))
  a.on('close', () => events.push('A close'))
  b.on('close', () => events.push('B close'))
  sockB.on('message', (d) => events.push('sockB non-UDX message len=' + d.length + ' hex=' + hex(d)))

  // 1. A holepunch probe and a non-UDX datagram before any stream: socket messages at B.
  await sockA.send(Buffer.from([0]), portX, LOCAL, 5)
  await sockA.send(Buffer.from('not udx, just a dht-rpc-ish datagram'), portX, LOCAL)
  await sleep(50)

  // 2. A connects to B's id; B accepts on the first data packet.
  a.connect(sockA, ID_B, portX, LOCAL)
  a.write(Buffer.from('hello'))
  await sleep(100)

  // 3. An unordered message.
  await a.send(Buffer.from('datagram'))
  await sleep(50)

  // 4. Six full packets, the second one dropped once: SACKs, then a retransmit.
  let firstSeq = null
  let dropped = false
  drop = (p) => {
    if (p.dir !== 'A->B' || !(p.flags & 1) || !(p.payloadLen > 1000)) return false
    if (firstSeq === null) firstSeq = p.seq
    if (!dropped && p.seq === firstSeq + 1) { dropped = true; return true }
    return false
  }
  a.write(Buffer.alloc(6 * 1152, 0xab))
  await sleep(1500)
  drop = () => false

  // 5. Idle with a keepalive: HEARTBEATs, each acknowledged.
  a.setKeepalive(300)
  await sleep(700)
  a.setKeepalive(0)

  // 6. A ends; B ends in its 'end' handler.
  a.end()
  await sleep(500)

  // 7. A second pair, destroyed by its writer.
  const sc = udx.createStream(ID_C)
  const sd = udx.createStream(ID_D)
  sd.on('error', (e) => events.push('D error ' + e.code))
  sd.on('close', () => events.push('D close'))
  sd.connect(sockB, ID_C, portY, LOCAL)
  sc.connect(sockA, ID_D, portX, LOCAL)
  sc.write(Buffer.from('x'))
  await sleep(100)
  sc.destroy()
  await sleep(200)

  // 8. Bulk data on a third pair, so the transcript above does not depend on it: MTU probes
  // (DATA with data_offset > 0) raise the MTU from 1200 towards 1500. Only the probes and the final
  // MTU are kept (mtu); which packets carry them depends on timing.
  const ID_E = 0x55555555
  const ID_F = 0x66666666
  const se = udx.createStream(ID_E)
  const sf = udx.createStream(ID_F)
  let bulkBytes = 0
  sf.on('data', (d) => { bulkBytes += d.length })
  sf.connect(sockB, ID_E, portY, LOCAL)
  se.connect(sockA, ID_F, portX, LOCAL)
  const bulk = []
  sink = bulk
  for (let i = 0; i < 40; i++) { se.write(Buffer.alloc(20000, 0xcd)); await sleep(20) }
  await sleep(1000)
  const mtuProbes = bulk
    .filter((p) => p.dir === 'A->B' && p.flags & 1 && p.off > 0)
    .map((p) => ({ seq: p.seq, udpLen: p.len, padding: p.off, data: p.payloadLen }))
  const mtu = { final: se.mtu, probes: mtuProbes }

  const total = received.reduce((n, d) => n + d.length, 0)
  events.push('B received ' + total + ' stream bytes')
  for (const s of [a, b, sc, sd, se, sf]) s.destroy()
  await sockA.close()
  await sockB.close()
  X.close()
  Y.close()
  if (total !== 5 + 6 * 1152) throw new Error('B received ' + total + ' bytes')
  if (bulkBytes !== 40 * 20000) throw new Error('the bulk pair moved ' + bulkBytes + ' bytes')
  return { streamIds: { A: ID_A, B: ID_B, C: ID_C, D: ID_D, E: ID_E, F: ID_F }, packets, events, mtu }
})
