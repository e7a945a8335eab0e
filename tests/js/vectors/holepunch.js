'use strict'
// The connect layer's values: holepunch payloads sealed by the real SecurePayload with the
// holepunch secret of the fixed handshake (handshake.js), address tokens, PEER_HANDSHAKE and
// PEER_HOLEPUNCH values in every mode, and a whole PEER_HANDSHAKE request datagram encoded
// by the real dht-rpc IO code.
const c = require('compact-encoding')
const sodium = require('sodium-universal')
const m = require('hyperdht/lib/messages.js')
const SecurePayload = require('hyperdht/lib/secure-payload.js')
const { COMMANDS } = require('hyperdht/lib/constants.js')
const IO = require('dht-rpc/lib/io.js')
const { hex, blake2b, deterministic, run, check } = require('./lib')
const { handshake } = require('./handshake')

deterministic('holepunch')

const FROM_CLIENT = 0
const FROM_SERVER = 1
const FROM_RELAY = 2
const FROM_SECOND_RELAY = 3
const REPLY = 4

run(async () => {
  const hs = handshake()
  const secret = hs.client.holepunchSecret
  const sp = new SecurePayload(secret)
  const localSecret = Buffer.alloc(32, 0x5a)
  sp._localSecret = localSecret
  const client = { host: '198.51.100.7', port: 51000 }
  const server = { host: '203.0.113.5', port: 40000 }
  const relay1 = { host: '88.99.3.86', port: 49737 }

  const tokenForClient = sp.token(client)
  check(tokenForClient.equals(blake2b(Buffer.from(client.host), localSecret)), 'token = keyed hash of the host')
  const tokens = {
    localSecret: hex(localSecret),
    'token(203.0.113.5)': hex(sp.token(server)),
    'token(198.51.100.7)': hex(tokenForClient)
  }

  const payloads = {
    clientProbeRound0: {
      error: 0, firewall: 2, round: 0, connected: false, punching: false,
      addresses: [client], remoteAddress: server, token: null, remoteToken: null
    },
    serverReplyRound0: {
      error: 0, firewall: 2, round: 0, connected: false, punching: false,
      addresses: [server], remoteAddress: null, token: tokenForClient, remoteToken: null
    },
    clientPunchRound1: {
      error: 0, firewall: 2, round: 1, connected: false, punching: true,
      addresses: [client], remoteAddress: null, token: Buffer.alloc(32, 0x77), remoteToken: tokenForClient
    },
    abort: {
      error: 1, firewall: 0, round: 2, connected: false, punching: false,
      addresses: null, remoteAddress: null, token: null, remoteToken: null
    }
  }
  const holepunchPayloads = {}
  for (const [name, p] of Object.entries(payloads)) {
    const plaintext = c.encode(m.holepunchPayload, p)
    const sealed = sp.encrypt(p) // nonce from the seeded randombytes_buf
    const opened = Buffer.alloc(plaintext.length)
    check(sodium.crypto_secretbox_open_easy(opened, sealed.subarray(24), sealed.subarray(0, 24), secret), 'opens ' + name)
    check(opened.equals(plaintext), 'plaintext of ' + name)
    check(sp.decrypt(Buffer.from(sealed)) !== null, 'SecurePayload.decrypt accepts ' + name)
    holepunchPayloads[name] = {
      json: p,
      plaintext: hex(plaintext),
      nonce: hex(sealed.subarray(0, 24)),
      sealed: hex(sealed),
      sealedLen: sealed.length
    }
  }
  const tampered = sp.encrypt(payloads.abort)
  tampered[tampered.length - 1] ^= 1
  check(sp.decrypt(tampered) === null, 'a tampered payload is rejected')

  const msg1 = hs.message1
  const msg2 = hs.message2
  const handshakes = {
    'FROM_CLIENT, client to relay node': { mode: FROM_CLIENT, noise: msg1, peerAddress: null, relayAddress: null },
    'FROM_RELAY, relay node to server': { mode: FROM_RELAY, noise: msg1, peerAddress: client, relayAddress: null },
    'FROM_SECOND_RELAY, relay node to the node holding the announce': { mode: FROM_SECOND_RELAY, noise: msg1, peerAddress: client, relayAddress: relay1 },
    'FROM_SERVER, server to relay node': { mode: FROM_SERVER, noise: msg2, peerAddress: client, relayAddress: null },
    'REPLY, relay node to client': { mode: REPLY, noise: msg2, peerAddress: server, relayAddress: null },
    'REPLY, server answering directly': { mode: REPLY, noise: msg2, peerAddress: null, relayAddress: null }
  }
  const peerHandshakeValues = {}
  for (const [name, v] of Object.entries(handshakes)) {
    const bytes = c.encode(m.handshake, v)
    check(c.decode(m.handshake, bytes).mode === v.mode, 'handshake mode ' + name)
    peerHandshakeValues[name] = hex(bytes)
  }
  const sealed = Buffer.from(holepunchPayloads.clientProbeRound0.sealed, 'hex')
  const holepunches = {
    'FROM_CLIENT, peerAddress is where the relay forwards': { mode: FROM_CLIENT, id: 0, payload: sealed, peerAddress: server },
    'FROM_RELAY, peerAddress is the client as the relay sees it': { mode: FROM_RELAY, id: 0, payload: sealed, peerAddress: client },
    'FROM_SERVER, id 0': { mode: FROM_SERVER, id: 0, payload: sealed, peerAddress: client },
    'REPLY, peerAddress is the server as the relay sees it': { mode: REPLY, id: 0, payload: sealed, peerAddress: server }
  }
  const peerHolepunchValues = {}
  for (const [name, v] of Object.entries(holepunches)) peerHolepunchValues[name] = hex(c.encode(m.holepunch, v))

  // The request datagram as dht-rpc's IO encodes it (no sockets: a stand-in udx object).
  const udx = { watchNetworkInterfaces: () => ({ destroy () {} }) }
  const io = new IO({ closest: () => [] }, udx, {})
  io._tid = 0x1234
  const target = blake2b(hs.keys.serverStatic.publicKey)
  const value = c.encode(m.handshake, handshakes['FROM_CLIENT, client to relay node'])
  const req = io.createRequest({ id: null, ...relay1 }, null, false, COMMANDS.PEER_HANDSHAKE, target, value, null, 0)
  const datagram = req._encodeRequest(null, value, req.to, null)

  return {
    tokens,
    holepunchPayloads,
    peerHandshakeValues,
    peerHolepunchValues,
    dhtRpcRequest_PEER_HANDSHAKE: { tid: 0x1234, to: relay1, target: hex(target), datagram: hex(datagram) }
  }
})
