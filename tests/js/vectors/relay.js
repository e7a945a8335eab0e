'use strict'
// FIND_PEER and a PEER_HANDSHAKE relayed by a persistent hyperdht node, captured on loopback:
// a raw "server" socket (40000) announces itself, a raw "client" socket (40001) finds it and
// sends a handshake the node forwards to the server and whose answer it returns to the client.
const c = require('compact-encoding')
const HyperDHT = require('hyperdht')
const m = require('hyperdht/lib/messages')
const Persistent = require('hyperdht/lib/persistent')
const { hex, unhex, blake2b, deterministic, run, check } = require('./lib')
const { HOST, NODE_PORT, encodeRequest, decode, probe, persistentNode } = require('./rpc')

deterministic('relay')

// The decoded view of a relayed datagram, with its handshake value decoded too.
function handshakeView (buf) {
  const d = decode(buf)
  const hs = c.decode(m.handshake, d.value)
  const view = { ...d, type: d.type.toString(16).padStart(2, '0') }
  if (d.type === 0x13) view.closerNodes = d.closerNodes ? d.closerNodes.length : 0
  view.value = { mode: hs.mode, noise: hex(hs.noise), peerAddress: hs.peerAddress, relayAddress: hs.relayAddress }
  return view
}

run(async () => {
  const out = {}
  const server = await probe(40000)
  const client = await probe(40001)
  const node = await persistentNode(HyperDHT)
  const N = { host: HOST, port: NODE_PORT }
  const kp = HyperDHT.keyPair(Buffer.alloc(32, 1))
  const target = blake2b(kp.publicKey)

  // The server gets a token with FIND_PEER and announces itself under H(public key).
  await server.send(encodeRequest({ tid: 1, to: N, command: 2, target }))
  const first = decode(await server.next())
  const token = unhex(first.token)
  const ann = { peer: { publicKey: kp.publicKey, relayAddresses: [] }, refresh: null, signature: null }
  ann.signature = Persistent.signAnnounce(target, token, unhex(first.id), ann, kp)
  await server.send(encodeRequest({ tid: 2, to: N, token, command: 4, target, value: c.encode(m.announce, ann) }))
  out.announceSelfError = decode(await server.next()).error

  // The client's FIND_PEER now returns the server's record.
  const fpRequest = encodeRequest({ tid: 0x0a0b, to: N, command: 2, target })
  await client.send(fpRequest)
  const fpResponse = await client.next()
  const fpValue = decode(fpResponse).value
  const rec = c.decode(m.peer, fpValue)
  out.findPeer = {
    request: hex(fpRequest),
    response: hex(fpResponse),
    value: hex(fpValue),
    record: { publicKey: hex(rec.publicKey), relayAddresses: rec.relayAddresses }
  }

  // PEER_HANDSHAKE FROM_CLIENT -> the node forwards it FROM_RELAY to the server; the server's
  // FROM_SERVER answer (same tid) goes back to the client as a REPLY response.
  const clientRequest = encodeRequest({
    tid: 0x0c0d, to: N, command: 0, target,
    value: c.encode(m.handshake, { mode: 0, noise: unhex('00112233'), peerAddress: null, relayAddress: null })
  })
  await client.send(clientRequest)
  const relayed = await server.next()
  const relayedView = handshakeView(relayed)
  check(relayedView.tid === 0x0c0d, 'the relayed request keeps the tid')
  const serverRequest = encodeRequest({
    tid: relayedView.tid, to: N, command: 0, target,
    value: c.encode(m.handshake, { mode: 1, noise: unhex('aabb'), peerAddress: { host: HOST, port: 40001 }, relayAddress: null })
  })
  await server.send(serverRequest)
  const reply = await client.next()
  out.handshakeRelay = {
    clientRequest: hex(clientRequest),
    relayedToServer: hex(relayed),
    relayedDecoded: relayedView,
    serverRequest: hex(serverRequest),
    responseToClient: hex(reply),
    responseDecoded: handshakeView(reply)
  }

  // LOOKUP on H(public key) returns the record as well.
  await client.send(encodeRequest({ tid: 5, to: N, command: 3, target }))
  out.lookupOnSelfTarget = hex(decode(await client.next()).value)

  await server.close()
  await client.close()
  await node.destroy()
  return out
})
