'use strict';
// Two client kinds behind one interface, so the scenarios do not care which server they drive:
//   await client.open()        connected and ready to send (handshake and namespace connect done)
//   await client.ask(body)     one request/reply round trip; resolves with the reply body
//   client.fanout(body)        fire the server's broadcast trigger
//   client.onChat = fn(body)   called with the body of every broadcast received
//   client.close()
// NeffosClient speaks the neffos wire protocol by hand over `ws`; SioClient uses socket.io-client.
// NeffosClient also has:
//   await client.open(null)              the handshake only, no namespace connected
//   await client.connectNamespace(ns)    true when the server accepted (empty reply)
//   await client.disconnectNamespace(ns) true on the empty reply
//   await client.ask(body, event)        an ask of another event of `default`
//   await client.joinRoom(room)          true when the server accepted (empty reply)
//   await client.leaveRoom(room)         true on the empty reply
//   await client.closeAndWait()          close, resolving once the socket is closed

const WebSocket = require('ws');
const { io } = require('socket.io-client');

const NAMESPACE = 'default';
const SEMICOLON = 0x3b;
const DOLLAR = 0x24;
const CHAT_PREFIX = `;${NAMESPACE};;chat;0;0;`;
const WS_OPTIONS = {
  perMessageDeflate: false,
  skipUTF8Validation: true,
  // An all-zero masking key: ws then skips the XOR pass. Servers must accept any key.
  generateMask: () => {},
};

// A connection the server drops in the middle of a run leaves the run hanging: stop it instead.
function unexpectedClose(what) {
  process.stderr.write(`loadgen: the server closed a connection: ${what}\n`);
  process.exit(2);
}

function tokenOf(buf) {
  const end = buf.indexOf(SEMICOLON);
  return end < 0 ? null : buf.toString('latin1', 0, end);
}

// Offered when the run measures permessage-deflate: every message compressed, as browsers
// do (ws's own default skips messages under 1 KiB).
const DEFLATE = { threshold: 0 };

class NeffosClient {
  constructor(url, deflate = false) {
    this.url = url;
    this.options = deflate ? { ...WS_OPTIONS, perMessageDeflate: DEFLATE } : WS_OPTIONS;
    this.id = null;
    this.onChat = null;
    this.pending = new Map(); // token -> callback(frame Buffer)
    this.nextToken = 1;
    this.ws = null;
    this.closing = false;
    this.lastRefusal = null;
  }

  open(namespace = NAMESPACE) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, this.options);
      this.ws = ws;
      ws.on('error', reject);
      ws.on('close', (code, reason) => {
        if (!this.closing) unexpectedClose(`code ${code} ${reason}`);
      });
      ws.on('open', () => ws.send('M'));
      const handshake = (data) => {
        const text = data.toString('latin1');
        if (text.startsWith(';;;_wsmvcRecovery;')) return; // recovery asked for: its key
        ws.off('message', handshake);
        if (text[0] !== 'A') {
          reject(new Error(`handshake refused: ${JSON.stringify(text)}`));
          return;
        }
        this.id = text.slice(1);
        ws.on('message', (buf) => this.onFrame(buf));
        if (namespace === null) {
          resolve(this);
          return;
        }
        this.connectNamespace(namespace).then((accepted) => {
          if (accepted) resolve(this);
          else reject(new Error(`namespace connect refused: ${this.lastRefusal}`));
        });
      };
      ws.on('message', handshake);
    });
  }

  token() {
    return `$${this.nextToken++}`;
  }

  // A namespace connect or disconnect, or a room join or leave: resolves with whether the
  // reply was the empty one (`$<token>;;;;;;`); otherwise the reply is kept in `lastRefusal`.
  namespaceRequest(namespace, event, room = '') {
    const token = this.token();
    return new Promise((resolve) => {
      this.pending.set(token, (buf) => {
        const reply = buf.toString('latin1');
        const accepted = reply === `${token};;;;;;`;
        if (!accepted) this.lastRefusal = JSON.stringify(reply);
        resolve(accepted);
      });
      this.ws.send(`${token};${namespace};${room};${event};0;0;`);
    });
  }

  connectNamespace(namespace) {
    return this.namespaceRequest(namespace, '_OnNamespaceConnect');
  }

  disconnectNamespace(namespace) {
    return this.namespaceRequest(namespace, '_OnNamespaceDisconnect');
  }

  joinRoom(room, namespace = NAMESPACE) {
    return this.namespaceRequest(namespace, '_OnRoomJoin', room);
  }

  leaveRoom(room, namespace = NAMESPACE) {
    return this.namespaceRequest(namespace, '_OnRoomLeave', room);
  }

  onFrame(buf) {
    if (buf[0] === DOLLAR) {
      const token = tokenOf(buf);
      const callback = this.pending.get(token);
      if (callback === undefined) throw new Error(`unexpected reply ${buf.toString('latin1')}`);
      this.pending.delete(token);
      callback(buf);
      return;
    }
    // Anything else must be a broadcast: `;default;;chat;0;0;<body>`; null marks a wrong frame.
    const text = buf.toString('latin1');
    const body = text.startsWith(CHAT_PREFIX) ? text.slice(CHAT_PREFIX.length) : null;
    if (this.onChat !== null) this.onChat(body);
  }

  ask(body, event = 'ask') {
    // The reply repeats token, namespace, room and event, with the answer as body: for an echo
    // it is the request itself. Anything else resolves to a description of the wrong frame.
    const token = this.token();
    const frame = `${token};${NAMESPACE};;${event};0;0;${body}`;
    return new Promise((resolve) => {
      this.pending.set(token, (buf) => {
        const reply = buf.toString('latin1');
        resolve(reply === frame ? body : `wrong reply ${JSON.stringify(reply)}`);
      });
      this.ws.send(frame);
    });
  }

  fanout(body) {
    this.ws.send(`;${NAMESPACE};;fanout;0;0;${body}`);
  }

  close() {
    this.closing = true;
    this.ws.close();
  }

  closeAndWait() {
    return new Promise((resolve) => {
      this.ws.once('close', resolve);
      this.close();
    });
  }
}

class SioClient {
  constructor(url) {
    this.url = url;
    this.onChat = null;
    this.socket = null;
    this.closing = false;
  }

  open() {
    return new Promise((resolve, reject) => {
      const socket = io(this.url, {
        transports: ['websocket'],
        forceNew: true, // one engine.io connection per client, no multiplexing
        reconnection: false,
        perMessageDeflate: false,
        timeout: 60000,
      });
      this.socket = socket;
      socket.once('connect', () => resolve(this));
      socket.once('connect_error', reject);
      socket.on('disconnect', (reason) => {
        if (!this.closing) unexpectedClose(reason);
      });
      socket.on('chat', (body) => {
        if (this.onChat !== null) this.onChat(body);
      });
    });
  }

  ask(body) {
    return new Promise((resolve) => this.socket.emit('ask', body, resolve));
  }

  fanout(body) {
    this.socket.emit('fanout', body);
  }

  close() {
    this.closing = true;
    this.socket.disconnect();
  }
}

function makeClient(proto, url, deflate = false) {
  if (proto === 'neffos') return new NeffosClient(url, deflate);
  if (proto === 'socketio') return new SioClient(url);
  throw new Error(`unknown protocol ${proto}`);
}

module.exports = { makeClient };
