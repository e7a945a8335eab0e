'use strict'
// dht-rpc datagrams captured on loopback: (A) requests an ephemeral dht-rpc node sends, (B)
// a persistent hyperdht node's replies to hand-encoded internal commands, (C) the hyperdht
// LOOKUP / ANNOUNCE exchange with tokens. Every tid is pinned, so the bytes are the same on
// every run (see rpc.js for the fixed addresses).
const c = require('compact-encoding')
const RPC = require('dht-rpc')
const HyperDHT = require('hyperdht')
const m = require('hyperdht/lib/messages')
const Persistent = require('hyperdht/lib/persistent')
const { hex, unhex, blake2b, ipv4, deterministic, run, check } = require('./lib')
const { HOST, NODE_PORT, encodeRequest, responseView, probe, persistentNode } = require('./rpc')

deterministic('wire')

run(async () => {
  const out = {}
  const p = await probe(40000)
  const P = { host: HOST, port: 40000 }
  const N = { host: HOST, port: NODE_PORT }
  const ignore = () => {}

  // A: an ephemeral node's own requests, as they leave it.
  const eph = new RPC({ bootstrap: false, host: HOST })
  await eph.fullyBootstrapped()
  eph.io._tid = 0x1234
  eph.ping(P, { retry: false }).catch(ignore)
  const ping = await p.next()
  check(ping.equals(encodeRequest({ tid: 0x1234, to: P, internal: true, command: 0 })), 'PING as encoded here')
  out.A_ping_request_from_ephemeral = { tid: '0x1234', to: HOST + ':40000', hex: hex(ping) }
  eph.delayedPing(P, 500, { retry: false }).catch(ignore)
  out.A_delayed_ping_request_500ms = hex(await p.next())
  eph.request({ command: 9, target: Buffer.alloc(32, 0xcd), value: Buffer.from('hi') }, P, { retry: false }).catch(ignore)
  out.A_external_cmd9_request_with_target_and_value = hex(await p.next())
  await eph.destroy()

  // B: a persistent node with five table entries.
  const node = await persistentNode(HyperDHT)
  out.B_node_id = hex(node.id)
  for (let i = 1; i <= 5; i++) node.addNode({ host: '10.0.0.' + i, port: NODE_PORT })
  node.io._tid = 0x0102
  node.ping(P, { retry: false }).catch(ignore)
  out.B1_ping_request_from_persistent = hex(await p.next())

  const exchange = async (request, from = p, to = from) => {
    await from.send(request)
    const response = await to.next()
    return { request: hex(request), response: hex(response), decoded: responseView(response) }
  }
  out.B2_ping = await exchange(encodeRequest({ tid: 7, to: N, internal: true, command: 0 }))
  out.B3_find_node = await exchange(encodeRequest({ tid: 8, to: N, internal: true, command: 2, target: Buffer.alloc(32) }))
  // PING_NAT: the node answers on the port named in the value.
  const p2 = await probe(40001)
  const nat = await exchange(encodeRequest({ tid: 9, to: N, internal: true, command: 1, value: c.encode(c.uint16, 40001) }), p, p2)
  out.B4_ping_nat = { request: nat.request, response_received_on_40001: nat.response, decoded: nat.decoded }
  await p2.close()
  out.B5_unknown_internal = await exchange(encodeRequest({ tid: 10, to: N, internal: true, command: 7 }))
  out.B6_down_hint = await exchange(encodeRequest({ tid: 11, to: N, internal: true, command: 3, value: ipv4('10.0.0.9', NODE_PORT) }))

  // C: LOOKUP for a token, ANNOUNCE with it, LOOKUP again, ANNOUNCE with a wrong token.
  const kp = HyperDHT.keyPair(Buffer.alloc(32, 1))
  const topic = blake2b(Buffer.from('my topic'))
  const c1 = await exchange(encodeRequest({ tid: 20, to: N, command: 3, target: topic }))
  out.C1_lookup_empty = { request: c1.request, decoded: c1.decoded }
  const token = unhex(c1.decoded.token)
  const ann = { peer: { publicKey: kp.publicKey, relayAddresses: [{ host: '1.2.3.4', port: 5678 }] }, refresh: null, signature: null, bump: 0 }
  ann.signature = Persistent.signAnnounce(topic, token, node.id, ann, kp)
  const annValue = c.encode(m.announce, ann)
  out.C2_announce = await exchange(encodeRequest({ tid: 21, to: N, token, command: 4, target: topic, value: annValue }))
  const c3 = await exchange(encodeRequest({ tid: 22, to: N, command: 3, target: topic }))
  out.C3_lookup_after_announce = { request: c3.request, response: c3.response, value: c3.decoded.value }
  const c4 = await exchange(encodeRequest({ tid: 23, to: N, token: Buffer.alloc(32), command: 4, target: topic, value: annValue }))
  out.C4_bad_token = { response: c4.response, decoded: c4.decoded }

  await p.close()
  await node.destroy()
  return out
})
