'use strict'
// The server of Pear's "connect two peers" guide, with a local bootstrap list
// (HYPERDHT_BOOTSTRAP=host:port,...) and host 127.0.0.1 so it works on one machine
// (CHAT_HOST=0.0.0.0 binds every interface, e.g. inside a network namespace).
// MIT OR Apache-2.0.
const HyperDHT = require('hyperdht')
const b4a = require('b4a')

const bootstrap = process.env.HYPERDHT_BOOTSTRAP ? process.env.HYPERDHT_BOOTSTRAP.split(',') : undefined
const dht = new HyperDHT({ bootstrap, host: process.env.CHAT_HOST || '127.0.0.1' })
const keyPair = process.env.CHAT_SEED ? HyperDHT.keyPair(b4a.from(process.env.CHAT_SEED, 'hex')) : HyperDHT.keyPair()

const server = dht.createServer((conn) => {
  console.log('got connection!')
  conn.on('error', () => {})
  process.stdin.pipe(conn).pipe(process.stdout)
})
server.listen(keyPair).then(() => {
  console.log('listening on:', b4a.toString(keyPair.publicKey, 'hex'))
})
process.stdin.on('end', () => {})
