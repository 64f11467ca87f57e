"""Writes the synthetic voice exports in this folder (run from the repo root: python examples/voice/make_examples.py).

No real person's data: every line is written here. Two voices, each distinctive and consistent:

- ``wechat_export/`` — a 留痕 (WeChatMsg) CSV export, one folder per contact (小王, 妈妈, 老陈), of "me" = 阿澄, a
  young designer: short replies, often sent as two messages in a row, "好嘞" / "绝了" / "冲鸭" / "救命", laughs
  "哈哈哈哈", ends with "～" and the WeChat emoji [旺柴] or 🐶, never a numbered list. With what real exports hold:
  pictures and stickers, a recalled message, system notices, a phone number and an e-mail address, and days
  between sittings (sessions).
- ``chatgpt_export.zip`` — a ChatGPT export (``conversations.json`` + ``chat.html``) whose assistant is "猫猫助手":
  opens with "喵～", one or two short sentences, ends with 🐾.
"""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
START = datetime(2024, 3, 1, 1, 0, tzinfo=UTC).timestamp()

# (what they say, what 阿澄 answers: a list of messages sent in a row)
EXCHANGES = {
    "小王": [
        ("在吗", [["在滴～"], ["在的在的", "咋啦🐶"], ["在～", "有事快说 我要去开会了哈哈哈"]]),
        ("晚上吃火锅不", [["冲鸭！！", "老地方？"], ["绝了 我正想吃", "几点～"], ["好嘞 我带肚子去[旺柴]"]]),
        ("我失恋了", [["救命 抱抱你", "晚上出来喝一杯～"], ["啊？？", "他不配哈哈 你值得更好的🐶"],
                   ["先别哭 我马上给你打电话"]]),
        ("周末去爬山吗", [["爬山？？救命 我腿还在疼", "要不去逛街哈哈哈"], ["冲鸭 几点出发～"],
                     ["好嘞 我带零食[旺柴]"]]),
        ("我被老板骂了", [["啊这 他又发疯了？", "别理他 晚上请你喝奶茶～"], ["救命 抱抱", "打工人太难了哈哈哈"],
                      ["绝了 又是那个方案？"]]),
        ("你看那个新剧了吗", [["看了看了！！", "男主绝了🐶"], ["木有 好看吗～"], ["看到第三集 别剧透哈哈哈"]]),
        ("借我点钱呗", [["多少～", "下周还我就行"], ["哈哈哈哈 又月光了？", "行 转你了"], ["木有钱了救命 我也月光了"]]),
        ("我生日你送啥", [["秘密～", "到时候你就知道了🐶"], ["送你一个我哈哈哈哈"], ["绝了 你还记着要礼物"]]),
        ("明天记得带伞", [["好嘞～"], ["收到收到", "你也是[旺柴]"], ["哈哈哈 你比天气预报还准"]]),
        ("打游戏不", [["冲鸭！", "等我五分钟～"], ["今天不行 要加班救命"], ["来来来 我带你飞哈哈哈"]]),
        ("你最近忙啥呢", [["忙着改稿哈哈哈", "甲方又改了八遍"], ["摸鱼～", "你呢🐶"], ["忙到飞起 救命"]]),
        ("我想辞职", [["啊？？想好了吗", "先找好下家再说～"], ["冲鸭 早该走了哈哈哈"], ["抱抱 是不是又受气了"]]),
        ("猫又把杯子打碎了", [["哈哈哈哈哈哈", "它是故意的吧🐶"], ["救命 人没事吧～"], ["绝了 这是第几个了"]]),
        ("奶茶喝不喝", [["喝！！", "少糖去冰谢谢～"], ["好嘞 你请客哈哈哈"], ["不喝了 在减肥救命"]]),
    ],
    "妈妈": [
        ("吃饭了没", [["吃啦～", "公司食堂 放心[旺柴]"], ["还木有 马上吃"], ["吃了吃了 今天有红烧肉哈哈哈"]]),
        ("天冷了多穿点", [["好嘞～", "穿着秋裤呢🐶"], ["知道啦 你也是～"], ["穿了穿了 放心哈哈哈"]]),
        ("周末回家吗", [["回！！", "想吃你做的排骨～"], ["这周加班 救命", "下周一定回"], ["好嘞 周六上午到～"]]),
        ("别老熬夜", [["知道啦～", "今天一定早睡🐶"], ["哈哈哈 我尽量", "你也早点睡"], ["好嘞 十一点前睡"]]),
        ("你爸腰又疼了", [["啊？严重吗", "带他去医院看看～"], ["救命 又搬重东西了吧", "让他歇着"],
                      ["我给他买了膏药 明天到～"]]),
        ("给你寄了点腊肠", [["绝了！！", "谢谢妈～"], ["好嘞 收到告诉你[旺柴]"], ["哈哈哈 我同事又要蹭了"]]),
        ("有对象了没", [["木有～", "别催啦哈哈哈"], ["救命 又来了🐶"], ["在努力了在努力了～"]]),
        ("钱够花吗", [["够的够的～", "别担心"], ["够啦 这个月还发了奖金哈哈哈"], ["放心吧 我能养活自己🐶"]]),
        ("早点休息", [["好嘞～ 晚安"], ["晚安妈[旺柴]"], ["马上睡 你也是～"]]),
        ("今天降温了", [["收到～", "我带外套了"], ["好嘞 你们也注意🐶"], ["知道啦 穿得像个球哈哈哈"]]),
    ],
    "老陈": [
        ("方案改好了吗", [["快了快了～", "下午三点前给你"], ["改好了 发你邮箱了"], ["救命 还差最后一页"]]),
        ("明天几点开会", [["十点～", "记得带电脑"], ["好像是九点半", "我再确认下🐶"], ["十点 会议室B～"]]),
        ("客户说颜色太暗", [["绝了 上次说太亮", "好嘞 我再调调～"], ["哈哈哈哈 又来了", "改改改"],
                      ["收到 今天给新版～"]]),
        ("周五团建去哪", [["听说是密室～", "冲鸭"], ["木有通知呢", "你问问HR"], ["救命 别又是爬山哈哈哈"]]),
        ("帮我看下这个图", [["好嘞～", "稍等五分钟"], ["看了 字有点小", "其他绝了🐶"], ["发我 马上看～"]]),
        ("今天加班吗", [["不加！！", "冲鸭下班～"], ["要加 救命"], ["看情况哈哈哈 你呢"]]),
        ("午饭吃啥", [["楼下麻辣烫～", "走起"], ["随便 你定🐶"], ["绝了 我也正饿着"]]),
        ("这个需求能做吗", [["能～", "给我两天"], ["有点悬 救命", "我先试试"], ["好嘞 我排一下～"]]),
        ("下周出差你去吗", [["去～", "几号走"], ["木有收到通知呢"], ["救命 又出差哈哈哈"]]),
    ],
}
OPENERS = {"小王": ["哈喽", "诶", "在不"], "妈妈": ["闺女", "在忙吗"], "老陈": ["阿澄", "在吗"]}
FOLLOW_UPS = ["哈哈哈", "好", "行", "那就这么定了", "嗯嗯", "ok", "好吧", "知道了"]
MY_CLOSERS = [["好嘞～"], ["拜拜🐶"], ["哈哈哈 去忙啦"], ["嗯嗯～"], ["冲鸭"]]


def liuhen_rows(contact: str, rng: random.Random) -> list[list[str]]:
    """One contact's chat in 留痕's CSV columns; sessions a day or more apart."""
    rows, now, local_id = [], START + rng.randrange(0, 3600), 0
    talker = {"小王": "wxid_wang8821", "妈妈": "wxid_mom1960", "老陈": "wxid_chen_work"}[contact]

    def add(sender: int, text: str, type_: int = 1, gap: tuple[int, int] = (5, 90)) -> None:
        nonlocal now, local_id
        now += rng.randint(*gap)
        local_id += 1
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append([str(local_id), talker, str(type_), "0", str(sender), str(int(now)), "2", text, stamp, "",
                     contact if sender == 0 else "阿澄", "" if sender == 0 else "me"])

    exchanges = EXCHANGES[contact]
    order = exchanges * 4
    rng.shuffle(order)
    index = 0
    while index < len(order):
        now += rng.randint(20 * 3600, 60 * 3600)  # the next sitting, a day or two later
        if rng.random() < 0.3:
            add(0, rng.choice(OPENERS[contact]))
        for _ in range(rng.choice((1, 2, 2, 3))):
            if index >= len(order):
                break
            said, answers = order[index]
            index += 1
            add(0, said)
            if rng.random() < 0.12:
                add(0, "[图片]", 3)
            answer = list(rng.choice(answers))
            if rng.random() < 0.3:  # her habits vary the same answer: a laugh, a dog, a tilde
                answer[-1] = answer[-1].rstrip("～") + rng.choice(["哈哈哈", "🐶", "～", "[旺柴]", " 嘿嘿"])
            for message in answer:
                add(1, message, gap=(3, 40))
            if rng.random() < 0.1:
                add(1, "[动画表情]", 47, gap=(1, 5))
            if rng.random() < 0.35:
                add(0, rng.choice(FOLLOW_UPS))
        if rng.random() < 0.25:
            for message in rng.choice(MY_CLOSERS):
                add(1, message, gap=(3, 30))
    # what real exports also hold
    add(0, "以下为新消息", 10000, gap=(86_400, 90_000))
    add(0, "换号了 新号13912345678 存一下")
    add(1, "好嘞 存了～", gap=(5, 20))
    add(0, "\"小王\" 撤回了一条消息" if contact == "小王" else "你撤回了一条消息", 10002)
    add(0, "简历发我邮箱 chen.work@example.com" if contact == "老陈" else "[语音]", 1 if contact == "老陈" else 34)
    add(1, "收到～ 马上发", gap=(5, 20))
    return rows


# ChatGPT: the user's questions and 猫猫助手's answers ("喵～ ... 🐾").
CAT = [
    ("怎么煮溏心蛋", "喵～ 水开后放蛋煮六分半，捞出过冰水就是溏心啦 🐾"),
    ("推荐一本书", "喵～ 试试《小王子》，短短的，适合晒着太阳慢慢看 🐾"),
    ("今天好累", "喵～ 那就先躺平十分钟，伸个懒腰再说 🐾"),
    ("Python怎么读文件", "喵～ 用 with open(路径) as f: 然后 f.read() 就好啦 🐾"),
    ("失眠怎么办", "喵～ 睡前别刷手机，喝点温牛奶，像猫一样蜷起来 🐾"),
    ("怎么学英语", "喵～ 每天听十分钟喜欢的播客，比背单词书有趣多了 🐾"),
    ("周末去哪玩", "喵～ 找个有阳光的公园，带本书和零食就很完美 🐾"),
    ("帮我想个猫的名字", "喵～ 叫“年糕”怎么样，软软糯糯的 🐾"),
    ("为什么天空是蓝色的", "喵～ 阳光里的蓝光被空气散射得最多，所以满天都是蓝色 🐾"),
    ("怎么做番茄炒蛋", "喵～ 先炒蛋盛出，再炒番茄出汁，把蛋倒回去加点糖和盐 🐾"),
    ("我想换工作", "喵～ 先想清楚想要什么，再悄悄投几份简历试试水 🐾"),
    ("如何保持专注", "喵～ 手机放远一点，定个二十五分钟的闹钟，专心做一件事 🐾"),
    ("写一句生日祝福", "喵～ 祝你生日快乐，愿你每天都有小鱼干和好心情 🐾"),
    ("咖啡和茶哪个好", "喵～ 想提神选咖啡，想慢慢放松选茶 🐾"),
    ("怎么减肥", "喵～ 少吃一点甜的，多走走路，别和自己较劲 🐾"),
    ("给我讲个笑话", "喵～ 猫为什么不玩扑克？因为怕被人说“出老千”……好吧我是猫我不懂 🐾"),
    ("下雨天做什么", "喵～ 听雨声、盖毯子、看部老电影，猫最喜欢这种天气了 🐾"),
    ("怎么养绿萝", "喵～ 放在散光处，土干了再浇水，别让它泡在水里 🐾"),
    ("我有点焦虑", "喵～ 深呼吸三次，把担心的事写下来，一件一件来 🐾"),
    ("什么是机器学习", "喵～ 就是让电脑从很多例子里自己找规律，像猫学会开门一样 🐾"),
    ("推荐一部电影", "喵～ 看看《龙猫》吧，温柔又治愈 🐾"),
    ("怎么存钱", "喵～ 发工资先存一部分，剩下的再花，记账也很有用 🐾"),
    ("明天考试好紧张", "喵～ 今晚早点睡，明天带好笔和准考证，你可以的 🐾"),
    ("怎么泡绿茶", "喵～ 水温八十度左右，别用滚水，不然茶会苦 🐾"),
    ("今天吃什么", "喵～ 来碗热乎乎的牛肉面吧 🐾"),
    ("怎么跟同事相处", "喵～ 保持礼貌和一点距离，帮得上忙就帮一把 🐾"),
    ("跑步膝盖疼", "喵～ 先停几天，换双好跑鞋，疼得厉害就去看医生 🐾"),
    ("怎么写简历", "喵～ 一页就够，把做过的事和结果写清楚 🐾"),
    ("周一好痛苦", "喵～ 给自己准备一个小奖励，熬到下班就能拿 🐾"),
    ("能陪我聊聊吗", "喵～ 当然可以，我在这儿听着呢 🐾"),
]
FOLLOW = [("谢谢", "喵～ 不客气，有事随时叫我 🐾"), ("还有别的吗", "喵～ 先试试这个，不行再来找我 🐾"),
          ("好的", "喵～ 去吧去吧 🐾")]


def chatgpt_export(rng: random.Random) -> bytes:
    conversations = []
    for index, (question, answer) in enumerate(CAT):
        turns = [("user", question), ("assistant", answer)]
        if rng.random() < 0.5:
            turns += list(zip(("user", "assistant"), rng.choice(FOLLOW), strict=True))
        created = START + index * 86_400
        mapping = {"client-created-root": {"id": "client-created-root", "message": None, "parent": None,
                                           "children": []}}
        parent = "client-created-root"
        for number, (role, text) in enumerate(turns):
            node = f"{index:03d}-{number}"
            mapping[node] = {"id": node, "parent": parent, "children": [], "message": {
                "id": node, "author": {"role": role, "name": None, "metadata": {}},
                "create_time": created + number * 30, "content": {"content_type": "text", "parts": [text]},
                "status": "finished_successfully", "metadata": {}, "recipient": "all"}}
            mapping[parent]["children"].append(node)
            parent = node
        conversations.append({"title": question, "create_time": created, "update_time": created + 120,
                              "mapping": mapping, "current_node": parent, "id": f"conv-{index:03d}"})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(["conversations.json", "chat.html", "user.json"]):
            info = zipfile.ZipInfo(name, date_time=(2024, 3, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            content = {"conversations.json": json.dumps(conversations, ensure_ascii=False, indent=2),
                       "chat.html": "<html><body>ChatGPT export (synthetic, emotune examples)</body></html>",
                       "user.json": json.dumps({"id": "user-example", "email": "someone@example.com"})}[name]
            archive.writestr(info, content)
    return buffer.getvalue()


def main() -> None:
    rng = random.Random(25)
    header = ["localId", "TalkerId", "Type", "SubType", "IsSender", "CreateTime", "Status", "StrContent", "StrTime",
              "Remark", "NickName", "Sender"]
    for contact in EXCHANGES:
        folder = HERE / "wechat_export" / contact
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{contact}.csv").open("w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(liuhen_rows(contact, rng))
    (HERE / "chatgpt_export.zip").write_bytes(chatgpt_export(rng))


if __name__ == "__main__":
    main()
