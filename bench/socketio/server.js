// A socket.io server with rooms, for comparison with braid's /ws: every
// connection joins the room "project"; POST /publish emits the body to it.
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 7788);
const srv = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/publish") {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      io.to("project").emit("event", JSON.parse(body));
      res.writeHead(204);
      res.end();
    });
  } else {
    res.writeHead(404);
    res.end();
  }
});
const io = new Server(srv, { transports: ["websocket"], perMessageDeflate: false });
io.on("connection", (s) => s.join("project"));
srv.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
