// Runs a query through the official Azure IoT service SDK for Node.js
// (npm azure-iothub), as a back end written for IoT Hub does, and prints
// the deviceId of every twin and the number of pages as JSON; with
// DEVICE_ID, also that device's identity and twin (Registry.get, getTwin);
// with NEW_ID, the registry's life cycle of a new device (create, twin
// update with its etag, a stale etag refused, list, delete); with
// METHOD_DEVICE, a direct method on that (connected) device and on one
// that is not connected.
//
//   SERVICE_CONNECTION_STRING="HostName=localhost:8443;SharedAccessKeyName=registryRead;SharedAccessKey=…"
//   NODE_EXTRA_CA_CERTS=ca.pem QUERY="SELECT * FROM devices" PAGE_SIZE=2 node iothub_query.js
const https = require('https');
const { Registry, Client } = require('azure-iothub');

// The SDK connects to HostName on port 443, through an https.Agent it makes
// when a Registry (or Client, JobClient) is created: this one honours a
// port written in the host name.
https.Agent = class HostPortAgent extends https.Agent {
  createConnection(options, cb) {
    const m = /^(.+):(\d+)$/.exec(options.host || '');
    if (m) options = { ...options, host: m[1], port: Number(m[2]), servername: m[1] };
    return super.createConnection(options, cb);
  }
};

async function main() {
  const registry = Registry.fromConnectionString(process.env.SERVICE_CONNECTION_STRING);
  const query = registry.createQuery(process.env.QUERY, Number(process.env.PAGE_SIZE || 100));
  const ids = [];
  let pages = 0;
  while (query.hasMoreResults) {
    const { result } = await query.nextAsTwin();
    pages++;
    for (const twin of result) ids.push(twin.deviceId);
  }
  const out = { ids, pages };
  if (process.env.DEVICE_ID) {
    const { responseBody: device } = await registry.get(process.env.DEVICE_ID);
    const { responseBody: twin } = await registry.getTwin(process.env.DEVICE_ID);
    out.device = { deviceId: device.deviceId, status: device.status, primaryKey: device.authentication.symmetricKey.primaryKey };
    out.twin = { deviceId: twin.deviceId, tags: twin.tags, reported: twin.properties.reported };
  }
  if (process.env.NEW_ID) {
    const id = process.env.NEW_ID;
    const { responseBody: created } = await registry.create({ deviceId: id });
    const { responseBody: twin } = await registry.getTwin(id);
    const { responseBody: updated } = await registry.updateTwin(id,
      { tags: { site: 'sdk' }, properties: { desired: { fw: '3.0' } } }, twin.etag);
    let stale = 'accepted';
    try {
      await registry.updateTwin(id, { tags: { site: 'again' } }, twin.etag);
    } catch (e) {
      stale = e.constructor.name;
    }
    const { responseBody: listed } = await registry.list();
    await registry.delete(id);
    let afterDelete = 'found';
    try {
      await registry.get(id);
    } catch (e) {
      afterDelete = e.constructor.name;
    }
    out.lifecycle = {
      created: created.deviceId, hasKey: !!created.authentication.symmetricKey.primaryKey,
      site: updated.tags.site, fw: updated.properties.desired.fw, stale,
      listed: listed.some((d) => d.deviceId === id), afterDelete,
    };
  }
  if (process.env.METHOD_DEVICE) {
    const client = Client.fromConnectionString(process.env.SERVICE_CONNECTION_STRING);
    const call = { methodName: 'reboot', payload: { a: 1 }, responseTimeoutInSeconds: 10 };
    const { result } = await client.invokeDeviceMethod(process.env.METHOD_DEVICE, call);
    let offline = 'answered';
    try {
      await client.invokeDeviceMethod(process.env.OFFLINE_DEVICE || 'fd1', call);
    } catch (e) {
      offline = e.constructor.name;
    }
    out.method = { status: result.status, payload: result.payload, offline };
  }
  console.log(JSON.stringify(out));
}
main().catch((e) => { console.error(e.message || e); process.exit(1); });
