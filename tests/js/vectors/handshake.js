'use strict'
// The fixed hyperdht Noise IK handshake the connect vectors share: static key pairs from
// seeds 01.. (client) and 02.. (server), ephemerals from seeds 03.. and 04.., run through the
// real hyperdht NoiseWrap (noise-handshake + noise-curve-ed).
const curve = require('noise-curve-ed')
const NoiseWrap = require('hyperdht/lib/noise-wrap.js')

const seedKeyPair = (byte) => {
  const seed = Buffer.alloc(32, byte)
  return { seed, ...curve.generateKeyPair(seed) }
}

const clientPayload = {
  version: 1,
  error: 0,
  firewall: 0,
  holepunch: null,
  addresses4: [{ host: '192.168.1.10', port: 49737 }],
  addresses6: [],
  udx: { reusableSocket: false, id: 0x12345678, seq: 0 },
  secretStream: {},
  relayThrough: null
}

const serverPayload = {
  error: 0,
  firewall: 0,
  holepunch: {
    id: 0,
    relays: [{ relayAddress: { host: '88.99.3.86', port: 49737 }, peerAddress: { host: '203.0.113.5', port: 40000 } }]
  },
  addresses4: [{ host: '203.0.113.5', port: 40000 }],
  addresses6: null,
  udx: { reusableSocket: false, id: 0x9abcdef0, seq: 0 },
  secretStream: {},
  relayThrough: null,
  relayAddresses: [{ host: '88.99.3.86', port: 49737 }]
}

function handshake () {
  const keys = {
    clientStatic: seedKeyPair(1),
    serverStatic: seedKeyPair(2),
    clientEphemeral: seedKeyPair(3),
    serverEphemeral: seedKeyPair(4)
  }
  // noise-handshake wipes key material once done: it gets its own copies.
  const copy = (kp) => ({ publicKey: Buffer.from(kp.publicKey), secretKey: Buffer.from(kp.secretKey) })
  const client = new NoiseWrap(copy(keys.clientStatic), Buffer.from(keys.serverStatic.publicKey))
  const server = new NoiseWrap(copy(keys.serverStatic), null)
  // It draws an ephemeral only while `e` is unset.
  client.handshake.e = copy(keys.clientEphemeral)
  server.handshake.e = copy(keys.serverEphemeral)
  // recv keeps views on its input: hand it copies.
  const message1 = Buffer.from(client.send(clientPayload))
  const seenByServer = server.recv(Buffer.from(message1))
  const message2 = Buffer.from(server.send(serverPayload))
  const seenByClient = client.recv(Buffer.from(message2))
  return { keys, message1, message2, seenByServer, seenByClient, client: client.final(), server: server.final() }
}

module.exports = { handshake, clientPayload, serverPayload, curve }
