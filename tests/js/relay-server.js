'use strict'
// A blind relay (npm blind-relay) on a hyperdht node, as hyperdht's own tests run one, with a
// local bootstrap list (HYPERDHT_BOOTSTRAP=host:port,...) and the address to bind in
// RELAY_HOST (default 127.0.0.1). Prints `relay listening on: <KEY>`.
// MIT OR Apache-2.0.
const HyperDHT = require('hyperdht')
const BlindRelay = require('blind-relay')
const b4a = require('b4a')

const bootstrap = process.env.HYPERDHT_BOOTSTRAP ? process.env.HYPERDHT_BOOTSTRAP.split(',') : undefined
const dht = new HyperDHT({ bootstrap, host: process.env.RELAY_HOST || '127.0.0.1' })
const relay = new BlindRelay.Server({
  createStream(opts) {
    return dht.createRawStream({ ...opts, framed: true })
  }
})
const server = dht.createServer((socket) => {
  socket.on('error', () => {})
  const session = relay.accept(socket, { id: socket.remotePublicKey })
  session.on('error', () => {})
})
const keyPair = HyperDHT.keyPair()
server.listen(keyPair).then(() => {
  console.log('relay listening on:', b4a.toString(keyPair.publicKey, 'hex'))
})
